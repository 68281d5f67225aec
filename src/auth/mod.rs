//! Authentication and roles: JWT bearer tokens checked with
//! `jsonwebtoken`, and the [`Principal`] every request runs as.
//!
//! The algorithm is pinned by configuration (`--jwt-algorithm`), so a token
//! cannot choose how it is verified: an `alg: none` token, or an HS256
//! token signed with an RSA public key, is refused before any signature
//! check. Several keys may be configured at once (PEM files named by key id,
//! or a JWKS file); a token picks one with its `kid` header.

use crate::ids::TenantId;
use clap::Args;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

mod keys;
pub use keys::KeyError;

/// What a caller may do. Ordered: each role can do what the ones below it
/// can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Query its tenant.
    Reader,
    /// Ingest into and query its tenant.
    Writer,
    /// Every tenant, and the admin routes.
    Admin,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Reader => "reader",
            Role::Writer => "writer",
            Role::Admin => "admin",
        })
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "reader" => Ok(Role::Reader),
            "writer" => Ok(Role::Writer),
            "admin" => Ok(Role::Admin),
            _ => Err(format!("unknown role {s:?}: use admin, writer or reader")),
        }
    }
}

/// Who a request runs as: the tenant whose tables it sees and its role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant: TenantId,
    pub role: Role,
    /// The token's `sub`, for the audit log.
    pub subject: Option<String>,
}

/// Whom a projection or pipeline reads its source as: the role and
/// subject of the caller that defined it, and what its policies hid of
/// the source then (a fingerprint of the restriction; empty when none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Definer {
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub restriction: String,
}

impl Definer {
    /// Whom a resource of `tenant` with `definer` reads as: the definer,
    /// or the server (an admin without a subject) for definitions made
    /// before definers were kept.
    pub fn reader(definer: Option<&Definer>, tenant: TenantId) -> Principal {
        match definer {
            Some(d) => d.principal(tenant),
            None => Principal::local_admin(tenant),
        }
    }

    /// The definer as a caller of `tenant`.
    pub fn principal(&self, tenant: TenantId) -> Principal {
        Principal {
            tenant,
            role: self.role,
            subject: self.subject.clone(),
        }
    }
}

impl Principal {
    /// Everyone, when auth is off: local use on loopback.
    pub fn local_admin(tenant: TenantId) -> Self {
        Principal {
            tenant,
            role: Role::Admin,
            subject: None,
        }
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Refuses with a message naming what was needed.
    pub fn require(&self, role: Role, action: &str) -> Result<(), AuthError> {
        if self.role >= role {
            Ok(())
        } else {
            Err(AuthError::Forbidden(format!(
                "role {} may not {action} (needs {role})",
                self.role
            )))
        }
    }
}

/// Tenant of the audit log and other server-owned tables. Tokens may not
/// name it, so no tenant can read or write it except through the admin
/// role.
pub const SYSTEM_TENANT: &str = "system";

/// JWT settings of `allsource serve`.
#[derive(Debug, Clone, Default, Args)]
pub struct AuthConfig {
    /// HS256 secret: turns authentication on. Prefer the environment
    /// variable or --jwt-secret-file, so it does not show in `ps`.
    #[arg(long, env = "ALLSOURCE_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// File holding the HS256 secret (trailing newline ignored).
    #[arg(long, env = "ALLSOURCE_JWT_SECRET_FILE")]
    pub jwt_secret_file: Option<PathBuf>,

    /// Public key for RS256/ES256 tokens, as a PEM file, optionally named
    /// by key id: `KID=path.pem`. Repeat (or separate with commas) for
    /// several keys at once, e.g. during rotation.
    #[arg(long, env = "ALLSOURCE_JWT_PUBLIC_KEY", value_delimiter = ',')]
    pub jwt_public_key: Vec<String>,

    /// JWKS file (`{"keys": [...]}`) with the public keys, chosen by `kid`.
    #[arg(long, env = "ALLSOURCE_JWT_JWKS")]
    pub jwt_jwks: Option<PathBuf>,

    /// The one algorithm tokens must use: HS256, RS256 or ES256. Default
    /// HS256 with a secret; required with public keys.
    #[arg(long, env = "ALLSOURCE_JWT_ALGORITHM")]
    pub jwt_algorithm: Option<String>,

    /// Required `iss` claim, when set.
    #[arg(long, env = "ALLSOURCE_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Required `aud` claim, when set.
    #[arg(long, env = "ALLSOURCE_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Clock skew allowed when checking `exp` and `nbf`.
    #[arg(long, env = "ALLSOURCE_JWT_LEEWAY", default_value = "30s", value_parser = humantime::parse_duration)]
    pub jwt_leeway: Duration,

    /// Serve without authentication on a non-loopback address. Anyone who
    /// can reach the port can then read, write and administer everything.
    #[arg(long, env = "ALLSOURCE_INSECURE", default_value_t = false)]
    pub insecure: bool,
}

impl AuthConfig {
    /// Whether any key is configured.
    pub fn enabled(&self) -> bool {
        self.jwt_secret.is_some()
            || self.jwt_secret_file.is_some()
            || !self.jwt_public_key.is_empty()
            || self.jwt_jwks.is_some()
    }

    /// The HS256 secret from the flag or the file.
    pub fn secret(&self) -> Result<Option<Vec<u8>>, KeyError> {
        if let Some(s) = &self.jwt_secret {
            return Ok(Some(s.as_bytes().to_vec()));
        }
        if let Some(path) = &self.jwt_secret_file {
            let text = std::fs::read_to_string(path).map_err(|source| KeyError::Unreadable {
                flag: "--jwt-secret-file",
                path: path.display().to_string(),
                source,
            })?;
            return Ok(Some(
                text.trim_end_matches(['\r', '\n']).as_bytes().to_vec(),
            ));
        }
        Ok(None)
    }
}

/// Why a request was refused. Messages say what was wrong with the token,
/// never anything about keys or other tenants.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// 401: no usable credentials.
    #[error("{0}")]
    Unauthenticated(String),
    /// 403: valid credentials, not allowed.
    #[error("{0}")]
    Forbidden(String),
}

/// The claims AllSource reads. `exp` is required; `nbf`, `iss`, `aud` are
/// checked by `jsonwebtoken` itself.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
}

/// The `aud` claim: one audience, or an array of them (RFC 7519 §4.1.3).
/// `jsonwebtoken` checks that the configured audience is among them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

/// Checks bearer tokens against the configured keys.
pub struct Verifier {
    algorithm: Algorithm,
    /// Keys by id; `None` for a key given without one.
    keys: Vec<(Option<String>, DecodingKey)>,
    validation: Validation,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithm", &self.algorithm)
            .field("keys", &self.keys.len())
            .finish()
    }
}

/// The algorithm `name`, given by `flag`.
fn parse_algorithm(flag: &'static str, name: &str) -> Result<Algorithm, KeyError> {
    match name.to_ascii_uppercase().as_str() {
        "HS256" => Ok(Algorithm::HS256),
        "RS256" => Ok(Algorithm::RS256),
        "ES256" => Ok(Algorithm::ES256),
        _ => Err(KeyError::UnsupportedAlgorithm {
            flag,
            name: name.to_string(),
        }),
    }
}

impl Verifier {
    /// The verifier for `config`, or `None` when auth is off. Errors name
    /// the flag or file at fault.
    pub fn from_config(config: &AuthConfig) -> Result<Option<Verifier>, KeyError> {
        if !config.enabled() {
            return Ok(None);
        }
        let secret = config.secret()?;
        let asymmetric = !config.jwt_public_key.is_empty() || config.jwt_jwks.is_some();
        if secret.is_some() && asymmetric {
            return Err(KeyError::SecretAndPublicKeys);
        }
        let algorithm = match (&config.jwt_algorithm, &secret) {
            (Some(a), _) => parse_algorithm("--jwt-algorithm", a)?,
            (None, Some(_)) => Algorithm::HS256,
            (None, None) => return Err(KeyError::AlgorithmMissing),
        };
        let mut keys = Vec::new();
        if let Some(secret) = secret {
            if algorithm != Algorithm::HS256 {
                return Err(KeyError::SecretNotHs256(algorithm));
            }
            if secret.len() < 32 {
                return Err(KeyError::SecretTooShort);
            }
            keys.push((None, DecodingKey::from_secret(&secret)));
        }
        for spec in &config.jwt_public_key {
            let (kid, path) = match spec.split_once('=') {
                Some((kid, path)) if !kid.is_empty() => (Some(kid.to_string()), path),
                _ => (None, spec.as_str()),
            };
            let flag = "--jwt-public-key";
            let pem = std::fs::read(path).map_err(|source| KeyError::Unreadable {
                flag,
                path: path.to_string(),
                source,
            })?;
            let key = match algorithm {
                Algorithm::RS256 => DecodingKey::from_rsa_pem(&pem),
                Algorithm::ES256 => DecodingKey::from_ec_pem(&pem),
                _ => {
                    return Err(KeyError::NotAsymmetric {
                        what: "public keys",
                        flag: "--jwt-algorithm",
                    });
                }
            }
            .map_err(|e| KeyError::UnusableKey {
                flag,
                path: path.to_string(),
                problem: format!("not a {algorithm:?} public key: {e}"),
            })?;
            keys.push((kid, key));
        }
        if let Some(path) = &config.jwt_jwks {
            let flag = "--jwt-jwks";
            let unusable = |problem: String| KeyError::UnusableKey {
                flag,
                path: path.display().to_string(),
                problem,
            };
            let text = std::fs::read_to_string(path).map_err(|source| KeyError::Unreadable {
                flag,
                path: path.display().to_string(),
                source,
            })?;
            let set: jsonwebtoken::jwk::JwkSet =
                serde_json::from_str(&text).map_err(|e| unusable(format!("not a JWKS: {e}")))?;
            for jwk in &set.keys {
                let key = DecodingKey::from_jwk(jwk)
                    .map_err(|e| unusable(format!("unusable key: {e}")))?;
                if key.family() != algorithm.family() {
                    return Err(unusable(format!(
                        "key {:?} is not a {algorithm:?} key",
                        jwk.common.key_id
                    )));
                }
                keys.push((jwk.common.key_id.clone(), key));
            }
        }
        if keys.is_empty() {
            return Err(KeyError::NoKeys);
        }
        let mut validation = Validation::new(algorithm);
        validation.leeway = config.jwt_leeway.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required = vec!["exp"];
        match &config.jwt_audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &config.jwt_issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        Ok(Some(Verifier {
            algorithm,
            keys,
            validation,
        }))
    }

    /// The principal a bearer token stands for.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        use jsonwebtoken::errors::ErrorKind;
        let bad = |m: &str| AuthError::Unauthenticated(format!("invalid token: {m}"));
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            ErrorKind::InvalidAlgorithmName | ErrorKind::UnsupportedAlgorithm => {
                bad("algorithm not accepted")
            }
            _ => bad("malformed"),
        })?;
        if header.alg != self.algorithm {
            return Err(bad("algorithm not accepted"));
        }
        let key = match &header.kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|(k, _)| k.as_deref() == Some(kid.as_str()))
                .map(|(_, key)| key)
                .ok_or_else(|| bad("unknown key id"))?,
            None if self.keys.len() == 1 => &self.keys[0].1,
            None => return Err(bad("no key id (kid) and several keys are configured")),
        };
        let data =
            jsonwebtoken::decode::<Claims>(token, key, &self.validation).map_err(|e| {
                match e.kind() {
                    ErrorKind::ExpiredSignature => bad("expired"),
                    ErrorKind::ImmatureSignature => bad("not yet valid (nbf)"),
                    ErrorKind::InvalidAudience => bad("wrong audience"),
                    ErrorKind::InvalidIssuer => bad("wrong issuer"),
                    ErrorKind::InvalidSignature => bad("bad signature"),
                    ErrorKind::InvalidAlgorithm => bad("algorithm not accepted"),
                    ErrorKind::MissingRequiredClaim(c) => bad(&format!("missing claim {c:?}")),
                    _ => bad("malformed"),
                }
            })?;
        let claims = data.claims;
        let role: Role = claims
            .role
            .as_deref()
            .ok_or_else(|| bad("missing claim \"role\""))?
            .parse()
            .map_err(|_| bad("claim \"role\" must be admin, writer or reader"))?;
        let tenant = match (claims.tenant.as_deref(), role) {
            (Some(t), _) => t
                .parse::<TenantId>()
                .map_err(|_| bad("claim \"tenant\" is not a valid tenant name"))?,
            (None, Role::Admin) => TenantId::default_tenant(),
            (None, _) => return Err(bad("missing claim \"tenant\"")),
        };
        if tenant.as_str() == SYSTEM_TENANT && role != Role::Admin {
            return Err(AuthError::Forbidden(format!(
                "tenant {SYSTEM_TENANT:?} is reserved"
            )));
        }
        Ok(Principal {
            tenant,
            role,
            subject: claims.sub,
        })
    }
}

/// What `allsource token` signs.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub tenant: Option<String>,
    pub role: Role,
    pub ttl: Duration,
    pub subject: Option<String>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub kid: Option<String>,
}

/// Signs a token with an HS256 secret or, when `private_key_pem` is given,
/// with an RS256/ES256 private key.
pub fn mint(
    request: &TokenRequest,
    secret: Option<&[u8]>,
    private_key: Option<(&str, &[u8])>,
) -> Result<String, KeyError> {
    if let Some(t) = &request.tenant {
        t.parse::<TenantId>()?;
    } else if request.role != Role::Admin {
        return Err(KeyError::TenantRequired);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let claims = Claims {
        tenant: request.tenant.clone(),
        role: Some(request.role.to_string()),
        sub: request.subject.clone(),
        exp: now + request.ttl.as_secs().max(1),
        nbf: None,
        iat: Some(now),
        iss: request.issuer.clone(),
        aud: request.audience.clone().map(Audience::One),
    };
    let (algorithm, key) = match (private_key, secret) {
        (Some((alg, pem)), _) => {
            let algorithm = parse_algorithm("--algorithm", alg)?;
            let key = match algorithm {
                Algorithm::RS256 => EncodingKey::from_rsa_pem(pem),
                Algorithm::ES256 => EncodingKey::from_ec_pem(pem),
                _ => {
                    return Err(KeyError::NotAsymmetric {
                        what: "private keys",
                        flag: "--algorithm",
                    });
                }
            }
            .map_err(|e| KeyError::BadPrivateKey(format!("not a {alg} private key: {e}")))?;
            (algorithm, key)
        }
        (None, Some(secret)) => (Algorithm::HS256, EncodingKey::from_secret(secret)),
        (None, None) => return Err(KeyError::NoSigningKey),
    };
    let mut header = Header::new(algorithm);
    header.kid = request.kid.clone();
    Ok(jsonwebtoken::encode(&header, &claims, &key)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(secret: &str) -> AuthConfig {
        AuthConfig {
            jwt_secret: Some(secret.into()),
            jwt_leeway: Duration::ZERO,
            ..AuthConfig::default()
        }
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn request(role: Role) -> TokenRequest {
        TokenRequest {
            tenant: Some("acme".into()),
            role,
            ttl: Duration::from_secs(60),
            subject: Some("alice".into()),
            issuer: None,
            audience: None,
            kid: None,
        }
    }

    #[test]
    fn minted_tokens_verify_and_carry_their_claims() {
        let v = Verifier::from_config(&config(SECRET)).unwrap().unwrap();
        let token = mint(&request(Role::Writer), Some(SECRET.as_bytes()), None).unwrap();
        let p = v.verify(&token).unwrap();
        assert_eq!(p.tenant.as_str(), "acme");
        assert_eq!(p.role, Role::Writer);
        assert_eq!(p.subject.as_deref(), Some("alice"));
    }

    #[test]
    fn a_token_signed_with_another_secret_is_refused() {
        let v = Verifier::from_config(&config(SECRET)).unwrap().unwrap();
        let other = "another-secret-another-secret-xx";
        let token = mint(&request(Role::Reader), Some(other.as_bytes()), None).unwrap();
        assert_eq!(
            v.verify(&token).unwrap_err(),
            AuthError::Unauthenticated("invalid token: bad signature".into())
        );
    }

    #[test]
    fn roles_are_ordered() {
        let p = Principal {
            tenant: TenantId::default_tenant(),
            role: Role::Writer,
            subject: None,
        };
        assert!(p.require(Role::Reader, "query").is_ok());
        assert!(p.require(Role::Writer, "ingest").is_ok());
        let e = p.require(Role::Admin, "compact").unwrap_err();
        assert_eq!(e.to_string(), "role writer may not compact (needs admin)");
    }

    #[test]
    fn an_audience_array_is_accepted_when_it_names_ours() {
        let mut c = config(SECRET);
        c.jwt_audience = Some("allsource".into());
        let v = Verifier::from_config(&c).unwrap().unwrap();
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 60;
        let token = |aud: serde_json::Value| {
            let claims =
                serde_json::json!({"tenant": "acme", "role": "reader", "exp": exp, "aud": aud});
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &claims,
                &EncodingKey::from_secret(SECRET.as_bytes()),
            )
            .unwrap()
        };
        let p = v
            .verify(&token(serde_json::json!(["other", "allsource"])))
            .unwrap();
        assert_eq!(p.tenant.as_str(), "acme");
        assert_eq!(
            v.verify(&token(serde_json::json!(["other", "another"])))
                .unwrap_err(),
            AuthError::Unauthenticated("invalid token: wrong audience".into())
        );
    }

    #[test]
    fn short_secrets_and_mixed_keys_are_refused() {
        assert!(matches!(
            Verifier::from_config(&config("short")),
            Err(KeyError::SecretTooShort)
        ));
        let mut c = config(SECRET);
        c.jwt_public_key = vec!["k.pem".into()];
        let e = Verifier::from_config(&c).unwrap_err();
        assert!(matches!(e, KeyError::SecretAndPublicKeys), "{e:?}");
        assert!(e.to_string().contains("not both"), "{e}");
    }
}
