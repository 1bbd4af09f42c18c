//! The command line: `tessera [serve]`, `tessera migrate`, `tessera keys list|rotate`.
//!
//! Exit codes: 0 success, 1 a runtime failure (database unreachable, port taken), 2 bad
//! configuration or usage. Failures print one line on stderr; results go to stdout, as JSON
//! with `--json`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::config::{Config, LogFormat};
use crate::crypto::keys::{self, KeyPolicy, KeyRing, KeyState};
use crate::store::{self, Store, keys::KeyRow};
use crate::{Application, telemetry};

#[derive(Debug, Parser)]
#[command(
    name = "tessera",
    version,
    about = "An OAuth 2.0 / OpenID Connect identity provider"
)]
pub struct Cli {
    /// Configuration file (default: config/tessera.toml when it exists).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate(Output),
    /// Delete expired rows now (the server also does this every 10 minutes).
    Sweep(Output),
    /// Manage signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage user accounts.
    #[command(subcommand)]
    User(UserCommand),
    /// Read the security audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Manage OAuth clients (relying parties and services).
    #[command(subcommand)]
    Client(ClientCommand),
}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Register a client; prints its id and (for a confidential client) its secret, once.
    Create(ClientCreate),
    /// List clients.
    List(Output),
    /// Show one client.
    Show {
        client_id: String,
        #[command(flatten)]
        out: Output,
    },
    /// Delete a client (its codes, tokens and consents go with it).
    Delete {
        client_id: String,
        #[command(flatten)]
        out: Output,
    },
    /// Give a confidential client a new secret; the old one stops working at once.
    RotateSecret {
        client_id: String,
        #[command(flatten)]
        out: Output,
    },
}

#[derive(Debug, Args)]
pub struct ClientCreate {
    /// The name people see on the consent page.
    #[arg(long)]
    pub name: String,
    /// A redirect URI, matched exactly (repeat for several).
    #[arg(long = "redirect-uri", value_name = "URI")]
    pub redirect_uris: Vec<String>,
    /// Where RP-initiated logout may return to (repeat for several).
    #[arg(long = "post-logout-redirect-uri", value_name = "URI")]
    pub post_logout_redirect_uris: Vec<String>,
    /// A public client (no secret; PKCE required), e.g. a single-page or native app.
    #[arg(long)]
    pub public: bool,
    /// authorization_code, refresh_token, client_credentials (repeat; default: the first two).
    #[arg(long = "grant-type", value_name = "TYPE")]
    pub grant_types: Vec<String>,
    /// Allowed scopes (repeat; default: openid profile email offline_access).
    #[arg(long = "scope", value_name = "SCOPE")]
    pub scopes: Vec<String>,
    /// client_secret_basic (default) or client_secret_post; public clients use none.
    #[arg(long)]
    pub auth_method: Option<String>,
    /// A first-party app: no consent page.
    #[arg(long)]
    pub skip_consent: bool,
    /// Choose the client id (default: random).
    #[arg(long)]
    pub client_id: Option<String>,
    #[command(flatten)]
    pub out: Output,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create an account; the password is read from standard input.
    Create(UserCreate),
    /// List accounts.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[command(flatten)]
        out: Output,
    },
    /// Show one account, by id, username or email.
    Show {
        user: String,
        #[command(flatten)]
        out: Output,
    },
    /// Delete an account (its sessions and links go with it), by id, username or email.
    Delete {
        user: String,
        #[command(flatten)]
        out: Output,
    },
}

#[derive(Debug, Args)]
pub struct UserCreate {
    #[arg(long)]
    pub username: String,
    #[arg(long)]
    pub email: String,
    /// Display name.
    #[arg(long, default_value = "")]
    pub name: String,
    /// Mark the email address as already verified.
    #[arg(long)]
    pub email_verified: bool,
    /// Read the password from standard input (one line). Required: passwords are never
    /// taken as arguments, which other users of the machine can see.
    #[arg(long, required = true)]
    pub password_stdin: bool,
    #[command(flatten)]
    pub out: Output,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Print the latest events, oldest first.
    Tail {
        /// How many events.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: i64,
        #[command(flatten)]
        out: Output,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// List the signing keys and where each is in its life.
    List(Output),
    /// Add a new signing key; it is published at once and signs after `keys.prepublish`.
    Rotate(Output),
}

#[derive(Debug, Args)]
pub struct Output {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// A failure that ends the command, with the exit code to use.
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn runtime(message: impl std::fmt::Display) -> Self {
        Self {
            code: 1,
            message: message.to_string(),
        }
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("tessera: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    let config = Config::load(cli.config.as_deref()).map_err(|e| Failure {
        code: 2,
        message: e.to_string(),
    })?;
    let command = cli.command.unwrap_or(Command::Serve);
    match &command {
        Command::Serve => telemetry::init_logging(config.log_format, &config.log_level),
        // Other commands print results; keep the log to warnings.
        _ => telemetry::init_logging(LogFormat::Text, "warn"),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::runtime(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(async move {
        match command {
            Command::Serve => serve(config).await,
            Command::Migrate(out) => migrate(config, out).await,
            Command::Sweep(out) => sweep(config, out).await,
            Command::Keys(KeysCommand::List(out)) => keys_list(config, out).await,
            Command::Keys(KeysCommand::Rotate(out)) => keys_rotate(config, out).await,
            Command::User(command) => user(config, command).await,
            Command::Audit(AuditCommand::Tail { lines, out }) => {
                audit_tail(config, lines, out).await
            }
            Command::Client(command) => client(config, command).await,
        }
    })
}

async fn serve(config: Config) -> Result<(), Failure> {
    let issuer = config.issuer.clone();
    let database = store::redact_url(&config.database_url);
    let app = Application::build(config).await.map_err(Failure::runtime)?;
    let addr = app.local_addr().map_err(Failure::runtime)?;
    tracing::info!(%addr, issuer, database, "tessera is listening");
    app.run_until(crate::shutdown_signal())
        .await
        .map_err(Failure::runtime)?;
    tracing::info!("stopped");
    Ok(())
}

async fn open(config: &Config) -> Result<Store, Failure> {
    let store = Store::open(config).await.map_err(Failure::runtime)?;
    store.migrate().await.map_err(Failure::runtime)?;
    Ok(store)
}

async fn migrate(config: Config, out: Output) -> Result<(), Failure> {
    let store = Store::open(&config).await.map_err(Failure::runtime)?;
    let applied = store.migrate().await.map_err(Failure::runtime)?;
    store.close().await;
    if out.json {
        print_json(&serde_json::json!({ "applied": applied }));
    } else {
        println!("database is up to date ({applied} migration(s) applied)");
    }
    Ok(())
}

async fn sweep(config: Config, out: Output) -> Result<(), Failure> {
    let store = open(&config).await?;
    let started = std::time::Instant::now();
    let rows = crate::housekeeping::sweep(&store, crate::housekeeping::Retention::of(&config))
        .await
        .map_err(Failure::runtime)?;
    let seconds = started.elapsed().as_secs_f64();
    store.close().await;
    if out.json {
        print_json(&serde_json::json!({ "deleted": rows, "seconds": seconds }));
    } else {
        println!("deleted {rows} expired row(s) in {seconds:.1} s");
    }
    Ok(())
}

/// A key as the CLI shows it.
#[derive(Serialize)]
struct KeyView {
    kid: String,
    generation: i64,
    algorithm: String,
    state: KeyState,
    created_at: String,
    active_from: String,
    retired_at: Option<String>,
    published_until: Option<String>,
}

impl KeyView {
    fn of(row: &KeyRow, now: i64, signing: Option<&str>) -> Self {
        Self {
            kid: row.kid.clone(),
            generation: row.generation,
            algorithm: row.algorithm.clone(),
            state: keys::state_of(row, now, signing),
            created_at: rfc3339(row.created_at),
            active_from: rfc3339(row.active_from),
            retired_at: row.retired_at.map(rfc3339),
            published_until: row.published_until.map(rfc3339),
        }
    }
}

async fn keys_list(config: Config, out: Output) -> Result<(), Failure> {
    let store = open(&config).await?;
    let mut conn = store.reader().acquire().await.map_err(Failure::runtime)?;
    let rows = store::keys::list(&mut conn)
        .await
        .map_err(Failure::runtime)?;
    drop(conn);
    store.close().await;
    let now = store::now_unix();
    let signing = keys::signing_kid(&rows, now);
    let views: Vec<KeyView> = rows
        .iter()
        .rev()
        .map(|r| KeyView::of(r, now, signing))
        .collect();
    if out.json {
        print_json(&views);
    } else if views.is_empty() {
        println!("no signing keys yet (one is created when the server first starts)");
    } else {
        println!(
            "{:<44} {:<8} {:<21} {:<21} PUBLISHED UNTIL",
            "KID", "STATE", "CREATED", "ACTIVE FROM"
        );
        for v in views {
            println!(
                "{:<44} {:<8} {:<21} {:<21} {}",
                v.kid,
                serde_json::to_value(v.state)
                    .ok()
                    .and_then(|s| s.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                v.created_at,
                v.active_from,
                v.published_until.unwrap_or_else(|| "-".into())
            );
        }
    }
    Ok(())
}

async fn keys_rotate(config: Config, out: Output) -> Result<(), Failure> {
    let store = open(&config).await?;
    let policy = KeyPolicy::from_config(&config).map_err(Failure::runtime)?;
    let ring = KeyRing::load(store.clone(), policy)
        .await
        .map_err(Failure::runtime)?;
    let row = ring.rotate().await.map_err(Failure::runtime)?;
    let Some(row) = row else {
        store.close().await;
        return Err(Failure::runtime(
            "another rotation happened at the same moment; run `tessera keys list`",
        ));
    };
    let mut conn = store.reader().acquire().await.map_err(Failure::runtime)?;
    let rows = store::keys::list(&mut conn)
        .await
        .map_err(Failure::runtime)?;
    drop(conn);
    store.close().await;
    let now = store::now_unix();
    let view = KeyView::of(&row, now, keys::signing_kid(&rows, now));
    if out.json {
        print_json(&view);
    } else {
        println!(
            "new signing key {} (generation {}), signing from {}",
            view.kid, view.generation, view.active_from
        );
    }
    Ok(())
}

/// An account as the CLI shows it.
#[derive(Serialize)]
struct UserView {
    id: String,
    username: String,
    email: String,
    email_verified: bool,
    name: String,
    has_password: bool,
    created_at: String,
}

impl UserView {
    fn of(u: &store::users::UserRow) -> Self {
        Self {
            id: u.id.clone(),
            username: u.username.clone(),
            email: u.email.clone(),
            email_verified: u.email_verified(),
            name: u.display_name.clone(),
            has_password: u.password_hash.is_some(),
            created_at: rfc3339(u.created_at),
        }
    }

    fn print(&self) {
        println!(
            "{}  {}  {} ({})  {}",
            self.id,
            self.username,
            self.email,
            if self.email_verified {
                "verified"
            } else {
                "not verified"
            },
            self.name
        );
    }
}

async fn find_user(store: &Store, key: &str) -> Result<store::users::UserRow, Failure> {
    let mut conn = store.read().await.map_err(Failure::runtime)?;
    let by_id = store::users::by_id(&mut conn, key)
        .await
        .map_err(Failure::runtime)?;
    let found = match by_id {
        Some(u) => Some(u),
        None => store::users::by_login(&mut conn, key)
            .await
            .map_err(Failure::runtime)?,
    };
    found.ok_or_else(|| Failure::runtime(format!("no user {key:?}")))
}

async fn user(config: Config, command: UserCommand) -> Result<(), Failure> {
    let store = open(&config).await?;
    let result = user_command(&config, &store, command).await;
    store.close().await;
    result
}

async fn user_command(config: &Config, store: &Store, command: UserCommand) -> Result<(), Failure> {
    match command {
        UserCommand::Create(c) => {
            let mut password = String::new();
            std::io::stdin().read_line(&mut password).map_err(|e| {
                Failure::runtime(format!("cannot read the password from stdin: {e}"))
            })?;
            let password = password.trim_end_matches(['\n', '\r']);
            let username = crate::accounts::service::validate_username(&c.username)
                .map_err(Failure::runtime)?;
            let email =
                crate::accounts::service::validate_email(&c.email).map_err(Failure::runtime)?;
            let name = crate::accounts::service::validate_display_name(&c.name)
                .map_err(Failure::runtime)?;
            let passwords = crate::crypto::password::Passwords::new(&config.passwords)
                .map_err(Failure::runtime)?;
            passwords
                .check_policy(password, &username, &email)
                .map_err(Failure::runtime)?;
            let hash = passwords.hash(password).await.map_err(Failure::runtime)?;
            let id = uuid::Uuid::now_v7().to_string();
            let now = store::now_unix();
            let mut tx = store.begin_write().await.map_err(Failure::runtime)?;
            let inserted = store::users::insert(
                &mut tx,
                &store::users::NewUser {
                    id: &id,
                    username: &username,
                    email: &email,
                    email_verified: c.email_verified,
                    display_name: &name,
                    password_hash: Some(&hash),
                    now,
                },
            )
            .await;
            if let Err(e) = inserted {
                return Err(Failure::runtime(if store::is_unique_violation(&e) {
                    "a user with that username or email already exists".to_owned()
                } else {
                    e.to_string()
                }));
            }
            let event = store::audit::NewEvent {
                kind: "registered",
                outcome: "success",
                user_id: Some(&id),
                detail: "cli",
                ..Default::default()
            };
            store::audit::insert(&mut tx, &event, now)
                .await
                .map_err(Failure::runtime)?;
            tx.commit().await.map_err(Failure::runtime)?;
            let user = find_user(store, &id).await?;
            if c.out.json {
                print_json(&UserView::of(&user))
            } else {
                UserView::of(&user).print()
            }
        }
        UserCommand::List { limit, out } => {
            let mut conn = store.read().await.map_err(Failure::runtime)?;
            let users = store::users::list(&mut conn, limit.clamp(1, 100_000))
                .await
                .map_err(Failure::runtime)?;
            let views: Vec<UserView> = users.iter().map(UserView::of).collect();
            if out.json {
                print_json(&views);
            } else {
                views.iter().for_each(UserView::print);
            }
        }
        UserCommand::Show { user, out } => {
            let view = UserView::of(&find_user(store, &user).await?);
            if out.json {
                print_json(&view)
            } else {
                view.print()
            }
        }
        UserCommand::Delete { user, out } => {
            let found = find_user(store, &user).await?;
            let mut tx = store.begin_write().await.map_err(Failure::runtime)?;
            store::users::delete(&mut tx, &found.id)
                .await
                .map_err(Failure::runtime)?;
            let event = store::audit::NewEvent {
                kind: "user_deleted",
                outcome: "success",
                user_id: Some(&found.id),
                detail: "cli",
                ..Default::default()
            };
            store::audit::insert(&mut tx, &event, store::now_unix())
                .await
                .map_err(Failure::runtime)?;
            tx.commit().await.map_err(Failure::runtime)?;
            if out.json {
                print_json(&serde_json::json!({ "deleted": found.id }));
            } else {
                println!("deleted {} ({})", found.username, found.id);
            }
        }
    }
    Ok(())
}

async fn audit_tail(config: Config, lines: i64, out: Output) -> Result<(), Failure> {
    let store = open(&config).await?;
    let mut conn = store.read().await.map_err(Failure::runtime)?;
    let rows = store::audit::tail(&mut conn, lines.clamp(1, 10_000))
        .await
        .map_err(Failure::runtime)?;
    drop(conn);
    store.close().await;
    if out.json {
        let rows: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                let mut v = serde_json::to_value(r).unwrap_or_default();
                v["time"] = serde_json::Value::String(rfc3339(r.at));
                v
            })
            .collect();
        print_json(&rows);
    } else {
        for r in rows {
            println!(
                "{}  {:<26} {:<16} user={} ip={} {}",
                rfc3339(r.at),
                r.kind,
                r.outcome,
                r.user_id.as_deref().unwrap_or("-"),
                if r.ip.is_empty() { "-" } else { &r.ip },
                r.detail
            );
        }
    }
    Ok(())
}

/// A client as the CLI shows it (the secret only right after it was made).
#[derive(Serialize)]
struct ClientView {
    client_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_secret: Option<String>,
    name: String,
    public: bool,
    token_endpoint_auth_method: String,
    redirect_uris: Vec<String>,
    post_logout_redirect_uris: Vec<String>,
    grant_types: Vec<String>,
    scopes: Vec<String>,
    skip_consent: bool,
    created_at: String,
}

impl ClientView {
    fn of(c: &store::clients::Client, secret: Option<String>) -> Self {
        Self {
            client_id: c.id.clone(),
            client_secret: secret,
            name: c.name.clone(),
            public: c.public,
            token_endpoint_auth_method: c.auth_method.clone(),
            redirect_uris: c.redirect_uris.clone(),
            post_logout_redirect_uris: c.post_logout_redirect_uris.clone(),
            grant_types: c.grant_types.clone(),
            scopes: c.scopes.clone(),
            skip_consent: c.skip_consent,
            created_at: rfc3339(c.created_at),
        }
    }

    fn print(&self, json: bool) {
        if json {
            print_json(self);
            return;
        }
        println!("client_id:     {}", self.client_id);
        if let Some(secret) = &self.client_secret {
            println!("client_secret: {secret}   (shown once; store it now)");
        }
        println!("name:          {}", self.name);
        println!(
            "type:          {} ({})",
            if self.public {
                "public"
            } else {
                "confidential"
            },
            self.token_endpoint_auth_method
        );
        println!("redirect URIs: {}", self.redirect_uris.join(" "));
        if !self.post_logout_redirect_uris.is_empty() {
            println!(
                "post-logout:   {}",
                self.post_logout_redirect_uris.join(" ")
            );
        }
        println!("grant types:   {}", self.grant_types.join(" "));
        println!("scopes:        {}", self.scopes.join(" "));
    }
}

async fn find_client(store: &Store, id: &str) -> Result<store::clients::Client, Failure> {
    let mut conn = store.read().await.map_err(Failure::runtime)?;
    store::clients::by_id(&mut conn, id)
        .await
        .map_err(Failure::runtime)?
        .ok_or_else(|| Failure::runtime(format!("no client {id:?}")))
}

async fn client(config: Config, command: ClientCommand) -> Result<(), Failure> {
    let store = open(&config).await?;
    let result = client_command(&store, command).await;
    store.close().await;
    result
}

async fn client_command(store: &Store, command: ClientCommand) -> Result<(), Failure> {
    use crate::oidc::clients::{RegisterError, Spec, register};
    match command {
        ClientCommand::Create(c) => {
            if let Some(id) = &c.client_id {
                let mut conn = store.read().await.map_err(Failure::runtime)?;
                if store::clients::by_id(&mut conn, id)
                    .await
                    .map_err(Failure::runtime)?
                    .is_some()
                {
                    return Err(Failure::runtime(format!("a client {id:?} already exists")));
                }
            }
            let spec = Spec {
                id: c.client_id,
                name: c.name,
                secret: None,
                public: c.public,
                redirect_uris: c.redirect_uris,
                post_logout_redirect_uris: c.post_logout_redirect_uris,
                grant_types: c.grant_types,
                scopes: c.scopes,
                auth_method: c.auth_method,
                skip_consent: c.skip_consent,
            };
            let (client, secret) = register(store, spec).await.map_err(|e| match e {
                RegisterError::Invalid(why) => Failure {
                    code: 2,
                    message: why,
                },
                other => Failure::runtime(other),
            })?;
            ClientView::of(&client, secret).print(c.out.json);
        }
        ClientCommand::List(out) => {
            let mut conn = store.read().await.map_err(Failure::runtime)?;
            let clients = store::clients::list(&mut conn)
                .await
                .map_err(Failure::runtime)?;
            let views: Vec<ClientView> = clients.iter().map(|c| ClientView::of(c, None)).collect();
            if out.json {
                print_json(&views);
            } else {
                for v in views {
                    println!(
                        "{}  {}  {}",
                        v.client_id,
                        if v.public { "public" } else { "confidential" },
                        v.name
                    );
                }
            }
        }
        ClientCommand::Show { client_id, out } => {
            ClientView::of(&find_client(store, &client_id).await?, None).print(out.json)
        }
        ClientCommand::Delete { client_id, out } => {
            let found = find_client(store, &client_id).await?;
            let mut tx = store.begin_write().await.map_err(Failure::runtime)?;
            store::clients::delete(&mut tx, &found.id)
                .await
                .map_err(Failure::runtime)?;
            let e = store::audit::NewEvent {
                kind: "client_deleted",
                outcome: "success",
                client_id: Some(&found.id),
                detail: "cli",
                ..Default::default()
            };
            store::audit::insert(&mut tx, &e, store::now_unix())
                .await
                .map_err(Failure::runtime)?;
            tx.commit().await.map_err(Failure::runtime)?;
            if out.json {
                print_json(&serde_json::json!({ "deleted": found.id }));
            } else {
                println!("deleted client {}", found.id);
            }
        }
        ClientCommand::RotateSecret { client_id, out } => {
            let found = find_client(store, &client_id).await?;
            if found.public {
                return Err(Failure::runtime("a public client has no secret"));
            }
            let secret = crate::crypto::secrets::random_token();
            let mut tx = store.begin_write().await.map_err(Failure::runtime)?;
            store::clients::set_secret(
                &mut tx,
                &found.id,
                &crate::crypto::secrets::token_hash(&secret),
                store::now_unix(),
            )
            .await
            .map_err(Failure::runtime)?;
            let e = store::audit::NewEvent {
                kind: "client_secret_rotated",
                outcome: "success",
                client_id: Some(&found.id),
                detail: "cli",
                ..Default::default()
            };
            store::audit::insert(&mut tx, &e, store::now_unix())
                .await
                .map_err(Failure::runtime)?;
            tx.commit().await.map_err(Failure::runtime)?;
            ClientView::of(&found, Some(secret)).print(out.json);
        }
    }
    Ok(())
}

fn print_json(value: &impl Serialize) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("tessera: cannot print JSON: {e}"),
    }
}

fn rfc3339(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| unix.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }
}
