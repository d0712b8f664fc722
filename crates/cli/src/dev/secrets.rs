//! Development secrets and tokens.
//!
//! An HS256 route of `switchyard.toml` names the variable that holds its secret
//! (`auth.jwt.secret-env`). Under `switchyard dev`, when that variable is not set, the runner
//! makes a random secret for it once, keeps it in `STATE/secrets/VAR` (mode 0600; `reset`
//! and `--fresh` keep it, so tokens already handed out stay valid) and gives it to the
//! gateway. `switchyard dev-token` signs tokens with the same secret, so a route with JWT
//! auth can be tried with curl without an identity provider. A variable that is set wins,
//! in both.

use super::state::StateDir;
use anyhow::{Context as _, anyhow, bail};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use switchyard_manifest::{RouteSpec, System};

/// The variable holding `route`'s HS256 secret, when it has one.
fn secret_var(route: &RouteSpec) -> Option<&str> {
    route.auth.as_ref()?.jwt.as_ref()?.secret_env.as_deref()
}

/// The HS256 routes of the system, by the variable holding their secret.
fn hs256_routes(system: &System) -> BTreeMap<&str, Vec<&RouteSpec>> {
    let mut out: BTreeMap<&str, Vec<&RouteSpec>> = BTreeMap::new();
    for r in &system.routes {
        if let Some(var) = secret_var(r) {
            out.entry(var).or_default().push(r);
        }
    }
    out
}

fn secret_path(state: &StateDir, var: &str) -> PathBuf {
    // `var` is a checked variable name (letters, digits, `_`), so it stays in the folder.
    state.root.join("secrets").join(var)
}

/// The development secret of every HS256 route whose variable is not set, made when missing.
pub fn ensure(state: &StateDir, system: &System) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for var in hs256_routes(system).into_keys() {
        if std::env::var_os(var).is_some() {
            continue;
        }
        let path = secret_path(state, var);
        let secret = match read(&path)? {
            Some(s) => s,
            None => create(&path)?,
        };
        out.insert(var.to_string(), secret);
    }
    Ok(out)
}

/// The secret in `path`; `None` when there is no file. A file that is not a usable secret
/// (edited by hand, truncated) is an error naming it, never silently replaced.
fn read(path: &Path) -> anyhow::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(s) => {
            let s = s.trim().to_string();
            if s.len() < switchyard_gateway::auth::MIN_HS256_SECRET_BYTES {
                bail!(
                    "{}: a development secret of fewer than {} bytes; delete the file to get a new one",
                    path.display(),
                    switchyard_gateway::auth::MIN_HS256_SECRET_BYTES
                );
            }
            Ok(Some(s))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn create(path: &Path) -> anyhow::Result<String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = path.parent().expect("secrets folder");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let bytes: [u8; 32] = rand::random();
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    // Written aside and renamed, so a crash leaves no half secret; 0600 from the start.
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(secret.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(secret)
}

/// `switchyard dev-token`.
#[derive(clap::Args, Debug)]
pub struct DevTokenArgs {
    /// The system directory: switchyard.toml.
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// The user the token is for (its `sub`): the backend gets it in the route's user header.
    #[arg(long, default_value = "dev")]
    sub: String,
    /// The route whose auth the token is for; needed when HS256 routes use different secrets.
    #[arg(long)]
    route: Option<String>,
    /// How long the token is valid.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// A further claim, KEY=VALUE (VALUE as JSON when it parses, else a string); repeatable.
    #[arg(long = "claim", value_name = "KEY=VALUE")]
    claims: Vec<String>,
    /// The runner's state folder (default DIR/.switchyard), where the secret is kept.
    #[arg(long)]
    state: Option<PathBuf>,
}

pub const DEV_TOKEN_HELP: &str = "Examples:\n  \
    switchyard dev-token examples/shop --sub ada\n  \
    curl localhost:7480/api/orders -H \"authorization: Bearer $(switchyard dev-token examples/shop --sub ada)\"\n\n\
    Prints an HS256 JWT for a route of DIR/switchyard.toml, signed with the secret its \
    auth.jwt.secret-env names: the variable's value when it is set, else the development \
    secret `switchyard dev` made for it in DIR/.switchyard/secrets. The token has sub, iat, \
    exp and the route's iss and aud. For development only: anyone with the state folder can \
    mint tokens.";

pub fn dev_token(args: DevTokenArgs) -> anyhow::Result<String> {
    let loaded = switchyard_manifest::load(&args.dir)
        .with_context(|| format!("reading the system in {}", args.dir.display()))?;
    if !loaded.is_ok() {
        bail!(
            "{} error(s) in the manifests; `switchyard check {}` lists them",
            loaded.errors(),
            args.dir.display()
        );
    }
    let system = loaded.system;
    if args.sub.trim().is_empty() {
        bail!("--sub: the user may not be empty");
    }
    let routes = hs256_routes(&system);
    let (var, route) = match &args.route {
        Some(name) => {
            let r = system
                .routes
                .iter()
                .find(|r| &r.name == name)
                .ok_or_else(|| anyhow!("--route {name}: no such route in switchyard.toml"))?;
            let var = secret_var(r)
                .ok_or_else(|| anyhow!("--route {name}: the route has no HS256 auth"))?;
            (var, r)
        }
        None => match routes.len() {
            0 => bail!(
                "{}/switchyard.toml has no route with HS256 auth (auth.jwt.secret-env)",
                args.dir.display()
            ),
            1 => {
                let (var, rs) = routes.iter().next().expect("one");
                (*var, rs[0])
            }
            _ => bail!(
                "HS256 routes use different secrets ({}): choose one with --route",
                routes
                    .iter()
                    .map(|(v, rs)| format!(
                        "{v}: {}",
                        rs.iter()
                            .map(|r| r.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        },
    };
    let secret = match std::env::var(var) {
        Ok(v) => v,
        Err(_) => {
            let state = StateDir::new(
                args.state
                    .clone()
                    .unwrap_or_else(|| args.dir.join(".switchyard")),
            );
            let path = secret_path(&state, var);
            read(&path)?.ok_or_else(|| {
                anyhow!(
                    "{var} is not set and {} does not exist: start `switchyard dev` once (it makes \
                     the development secret), or set {var}",
                    path.display()
                )
            })?
        }
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the clock is before 1970")?
        .as_secs();
    let mut claims = serde_json::Map::new();
    for c in &args.claims {
        let (k, v) = c
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| anyhow!("--claim {c:?}: give KEY=VALUE"))?;
        let v = serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.into()));
        claims.insert(k.to_string(), v);
    }
    claims.insert("sub".into(), args.sub.clone().into());
    claims.insert("iat".into(), now.into());
    claims.insert("exp".into(), (now + args.ttl.as_secs().max(1)).into());
    let jwt = route.auth.as_ref().and_then(|a| a.jwt.as_ref());
    if let Some(iss) = jwt.and_then(|j| j.issuer.as_ref()) {
        claims.insert("iss".into(), iss.clone().into());
    }
    if let Some(aud) = jwt.and_then(|j| j.audience.first()) {
        claims.insert("aud".into(), aud.clone().into());
    }
    switchyard_gateway::auth::mint_hs256(&secret, &serde_json::Value::Object(claims))
        .map_err(|e| anyhow!("{var}: {e}"))
}
