//! Why the keys tokens are verified or signed with cannot be set up.

use jsonwebtoken::Algorithm;

/// Why the keys to verify (or sign) tokens with cannot be set up. Each
/// names the flag or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read {flag} {path}: {source}")]
    Unreadable {
        flag: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("unsupported {flag} {name:?}: use HS256, RS256 or ES256")]
    UnsupportedAlgorithm { flag: &'static str, name: String },
    #[error("give either a JWT secret (HS256) or public keys (RS256/ES256), not both")]
    SecretAndPublicKeys,
    #[error("--jwt-algorithm (RS256 or ES256) is required with public keys")]
    AlgorithmMissing,
    #[error("a JWT secret is for HS256, but --jwt-algorithm is {0:?}")]
    SecretNotHs256(Algorithm),
    #[error("the JWT secret must be at least 32 bytes")]
    SecretTooShort,
    #[error("{what} need {flag} RS256 or ES256")]
    NotAsymmetric {
        what: &'static str,
        flag: &'static str,
    },
    #[error("{flag} {path}: {problem}")]
    UnusableKey {
        flag: &'static str,
        path: String,
        problem: String,
    },
    #[error("--private-key: {0}")]
    BadPrivateKey(String),
    #[error("no JWT keys configured")]
    NoKeys,
    #[error(
        "no key to sign with: set ALLSOURCE_JWT_SECRET (or --secret-file), or give --private-key"
    )]
    NoSigningKey,
    #[error("--tenant is required for writer and reader tokens")]
    TenantRequired,
    #[error(transparent)]
    Tenant(#[from] crate::ids::InvalidName),
    #[error("cannot sign the token: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}
