//! `fota token create|revoke`: admin tokens, made on the server's machine. It talks to the
//! server's database directly (so the first admin token needs no token), found as `fota serve`
//! finds it: `--config`, `--data-dir`, `--database-url` or their `FOTA_*` variables, else
//! SQLite in `./fota-data`. It refuses to work on a database `fota serve` has not made, which
//! would hold a token no server accepts, unless `create --create` asks for a new one.

use anyhow::Context as _;
use fota_server::config::{ServeArgs, ServeConfig};
use fota_server::domain::auth::Role;
use fota_server::domain::auth::{new_token, token_hash, ADMIN_TOKEN_PREFIX};
use fota_server::store::{now_ms, Store, StoreError};
use std::io::Write;

/// `fota token`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub action: Action,
}

/// Token actions.
#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Create a token and print it (it is shown only this once).
    ///
    /// This writes to the server's database directly: run it on the server's machine, where
    /// `fota serve` keeps its data (./fota-data by default), or point --data-dir, --database-url
    /// or --config at the server's. A database `fota serve` has not made yet is refused, unless
    /// --create.
    Create {
        /// Who or what the token is for (recorded as the actor of its actions).
        #[arg(long)]
        name: String,
        /// viewer, operator or admin.
        #[arg(long, value_parser = role_parser())]
        role: Role,
        /// Make the database if there is none yet (before the server's first start).
        #[arg(long)]
        create: bool,
        /// Print `{"id", "name", "role", "token"}` as JSON.
        #[arg(long)]
        json: bool,
        /// Database and data directory, as for `fota serve`.
        #[command(flatten)]
        db: DbArgs,
    },
    /// Revoke a token by id (in the server's database, as `create`).
    Revoke {
        /// Token id (printed by `create`).
        #[arg(long)]
        id: i64,
        /// Database and data directory, as for `fota serve`.
        #[command(flatten)]
        db: DbArgs,
    },
}

/// Where the database is.
#[derive(Debug, Clone, clap::Args)]
pub struct DbArgs {
    /// TOML configuration file (the server's).
    #[arg(long, env = "FOTA_CONFIG")]
    pub config: Option<std::path::PathBuf>,
    /// Data directory (default `fota-data`).
    #[arg(long, env = "FOTA_DATA_DIR")]
    pub data_dir: Option<std::path::PathBuf>,
    /// Database URL (default: SQLite in the data directory).
    #[arg(long, env = "FOTA_DATABASE_URL")]
    pub database_url: Option<String>,
}

impl DbArgs {
    fn url(&self) -> anyhow::Result<String> {
        let config = ServeConfig::resolve(&ServeArgs {
            config: self.config.clone(),
            data_dir: self.data_dir.clone(),
            database_url: self.database_url.clone(),
            ..ServeArgs::default()
        })?;
        Ok(config.database_url)
    }

    /// The server's database; with `create`, a new one if there is none.
    async fn open(&self, create: bool) -> anyhow::Result<Store> {
        let url = self.url()?;
        let shown = fota_server::serve::redact(&url);
        let store = if create {
            Store::connect(&url).await
        } else {
            Store::connect_existing(&url).await
        };
        store.map_err(|e| match e {
            StoreError::NoDatabase => anyhow::anyhow!(
                "no fota database at {shown}: run this where fota serve keeps its data, or point \
                 --data-dir, --database-url or --config at the server's (token create --create \
                 makes a new database)"
            ),
            other => anyhow::Error::new(other).context(format!("cannot open database {shown}")),
        })
    }
}

/// Run `fota token`.
pub fn run(args: &Args, out: &mut dyn Write) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        match &args.action {
            Action::Create {
                name,
                role,
                create,
                json,
                db,
            } => {
                let name = name.trim();
                if name.is_empty() || name.len() > 64 {
                    anyhow::bail!("--name must be 1-64 characters");
                }
                let store = db.open(*create).await?;
                let token = new_token(ADMIN_TOKEN_PREFIX).context("no randomness")?;
                let id = store
                    .create_admin_token(name, *role, &token_hash(&token), &local_actor(), now_ms())
                    .await?;
                store.close().await;
                if *json {
                    let value = serde_json::json!({
                        "id": id,
                        "name": name,
                        "role": role.as_str(),
                        "token": token,
                    });
                    return crate::ops::print_json(out, &value);
                }
                writeln!(out, "{token}")?;
                eprintln!(
                    "token {id} for {name:?} with role {}; shown only once",
                    role.as_str()
                );
                Ok(())
            }
            Action::Revoke { id, db } => {
                let store = db.open(false).await?;
                store
                    .revoke_admin_token(*id, &local_actor(), now_ms())
                    .await?;
                store.close().await;
                writeln!(out, "revoked token {id}")?;
                Ok(())
            }
        }
    })
}

/// The actor of a token created or revoked here, in the audit log: no token is behind this
/// command, only someone with the database, so it records who ran it on which machine's
/// account: `local:<user>` (`USER`, else `LOGNAME`), or `local` when neither is set.
fn local_actor() -> String {
    ["USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.trim().is_empty()))
        .map_or_else(
            || "local".to_string(),
            |user| format!("local:{}", user.trim().chars().take(58).collect::<String>()),
        )
}

/// `--role`: the roles' names, listed in `--help` and in a refusal as clap lists an enum's.
fn role_parser() -> impl clap::builder::TypedValueParser<Value = Role> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(Role::ALL.map(Role::as_str))
        .try_map(|name| name.parse::<Role>())
}
