//! `allsource token`: mints a JWT for local use and prints it.

#[derive(Debug, clap::Args)]
pub(crate) struct TokenArgs {
    /// The tenant the token acts on (optional for admin).
    #[arg(long)]
    tenant: Option<String>,
    /// admin, writer or reader.
    #[arg(long)]
    role: allsource::auth::Role,
    /// How long the token is valid.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    ttl: std::time::Duration,
    /// The `sub` claim: who holds the token (shown in the audit log).
    #[arg(long)]
    subject: Option<String>,
    #[arg(long, env = "ALLSOURCE_JWT_ISSUER")]
    issuer: Option<String>,
    #[arg(long, env = "ALLSOURCE_JWT_AUDIENCE")]
    audience: Option<String>,
    /// HS256 secret (the server's --jwt-secret).
    #[arg(long, env = "ALLSOURCE_JWT_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// File holding the HS256 secret.
    #[arg(long, env = "ALLSOURCE_JWT_SECRET_FILE")]
    secret_file: Option<std::path::PathBuf>,
    /// PEM private key, to sign RS256/ES256 tokens instead.
    #[arg(long)]
    private_key: Option<std::path::PathBuf>,
    /// Algorithm of --private-key: RS256 or ES256.
    #[arg(long, default_value = "RS256")]
    algorithm: String,
    /// Key id to put in the token's header.
    #[arg(long)]
    kid: Option<String>,
}

/// Signs the token with the secret (or the private key) and prints it.
pub(crate) fn run(args: &TokenArgs) -> anyhow::Result<()> {
    let auth = allsource::auth::AuthConfig {
        jwt_secret: args.secret.clone(),
        jwt_secret_file: args.secret_file.clone(),
        ..Default::default()
    };
    let secret = auth.secret()?;
    let pem = match &args.private_key {
        Some(p) => Some(
            std::fs::read(p).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))?,
        ),
        None => None,
    };
    let request = allsource::auth::TokenRequest {
        tenant: args.tenant.clone(),
        role: args.role,
        ttl: args.ttl,
        subject: args.subject.clone(),
        issuer: args.issuer.clone(),
        audience: args.audience.clone(),
        kid: args.kid.clone(),
    };
    let token = allsource::auth::mint(
        &request,
        secret.as_deref(),
        pem.as_deref().map(|p| (args.algorithm.as_str(), p)),
    )?;
    println!("{token}");
    Ok(())
}
