//! The `insights` command: parses the CLI, sets up logging, loads config and calls into the library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use insights::config::{Config, ProcessEnv};
use insights::domain::{Email, Password, PersonName};
use insights::store;

#[derive(Parser)]
#[command(name = "insights", version, about = "Real-time customer insights platform")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a node: HTTPS API, actors, live updates (migrates first unless INSIGHTS_MIGRATE_ON_START=false).
    Serve {
        /// Skip migrations at start even if the config enables them.
        #[arg(long)]
        no_migrate: bool,
    },
    /// Runs a node with a demo organization: generated customers and interactions scored by the model,
    /// a live trickle of new ones, and the dashboard at https://<listen>/. A second run reuses the data.
    Demo {
        /// Interactions to generate.
        #[arg(long, default_value_t = 50_000)]
        interactions: usize,
        /// Customers to generate.
        #[arg(long, default_value_t = 2_000)]
        customers: usize,
        /// Seed of the generator (the same seed gives the same data).
        #[arg(long, default_value_t = 2026)]
        seed: u64,
        /// Milliseconds between live interactions (jittered); 0 turns the trickle off.
        #[arg(long, default_value_t = 3_000)]
        trickle_ms: u64,
    },
    /// Creates the database if needed and applies every pending migration.
    Migrate,
    /// Re-encrypts customers' sealed fields with INSIGHTS_DATA_KEY, in batches with progress; what was
    /// sealed with INSIGHTS_DATA_KEY_PREVIOUS (which must be set) is opened with it. Resumable: run it
    /// again after an interruption. Nodes keep serving meanwhile (give them both keys).
    RotateDataKey {
        /// Customers re-encrypted per transaction.
        #[arg(long, default_value_t = 500)]
        batch: i64,
    },
    /// Imports interactions from an NDJSON or CSV file (streamed; rejected rows go to a side file).
    Import {
        /// The file: NDJSON (one object per line) or CSV with a header row (by extension, or --format).
        file: std::path::PathBuf,
        /// The organization to import into.
        #[arg(long)]
        org: String,
        /// ndjson or csv (default: from the file's extension).
        #[arg(long)]
        format: Option<String>,
        /// Where rejected rows are written (default: FILE.rejects.ndjson).
        #[arg(long)]
        rejects: Option<std::path::PathBuf>,
        /// Create customers named by customerExternalId that do not exist yet.
        #[arg(long)]
        create_customers: bool,
        /// Print the summary as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Manages organizations.
    Org {
        #[command(subcommand)]
        command: OrgCommand,
    },
}

#[derive(Subcommand)]
enum OrgCommand {
    /// Creates an organization and its first admin.
    Create {
        /// The organization's name.
        #[arg(long)]
        name: String,
        /// The first admin's email (their login).
        #[arg(long)]
        admin_email: String,
        /// The first admin's password (8 to 72 bytes).
        #[arg(long, env = "INSIGHTS_ADMIN_PASSWORD", hide_env_values = true)]
        admin_password: String,
        /// The first admin's display name (defaults to the part of the email before '@').
        #[arg(long)]
        admin_name: Option<String>,
        /// Print `{"organizationId": ..., "adminUserId": ...}` on stdout.
        #[arg(long)]
        json: bool,
    },
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,ort=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("INSIGHTS_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
    // A panic (an actor's included: its supervisor then logs the failure and restarts it) is logged as
    // one event with the backtrace of where it happened, in the log's own format (R11.2).
    std::panic::set_hook(Box::new(|info| {
        let backtrace = std::backtrace::Backtrace::force_capture();
        let thread = std::thread::current();
        tracing::error!(thread = thread.name().unwrap_or("-"), panic = %info, %backtrace, "panic");
    }));
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    // Before any connection: TLS to PostgreSQL (`sslmode`) needs the process's rustls provider too.
    insights::http::tls::install_crypto_provider();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut config = Config::load(&ProcessEnv)?;
    match cli.command {
        Command::Serve { no_migrate } => {
            if no_migrate {
                config.migrate_on_start = false;
            }
            // Checked before anything else so a missing secret is the first and only thing said.
            config.require_jwt_secret()?;
            config.require_data_key()?;
            let app = insights::App::build(config).await?;
            app.run_until_stopped().await
        }
        Command::RotateDataKey { batch } => {
            if batch < 1 {
                anyhow::bail!("--batch must be at least 1");
            }
            let keys =
                store::fields::FieldKeys::new(config.require_data_key()?, config.data_key_previous.as_ref())?;
            let pool = store::connect(&config.database_url, &config.db)?;
            store::migrate(&pool).await?;
            store::data_keys::check(&pool, &keys).await?;
            let done = store::data_keys::rotate(&pool, &keys, batch, |done, left| {
                eprintln!("re-encrypted {done} of {left} customers");
            })
            .await?;
            println!(
                "{done} customers re-encrypted with data key {}; every other key is retired (INSIGHTS_DATA_KEY_PREVIOUS can go)",
                hex::encode(keys.current_id())
            );
            Ok(())
        }
        Command::Demo {
            interactions,
            customers,
            seed,
            trickle_ms,
        } => {
            let opts = insights::demo::DemoOptions {
                interactions,
                customers,
                seed,
                trickle: std::time::Duration::from_millis(trickle_ms),
                ..insights::demo::DemoOptions::default()
            };
            run_demo(config, opts).await
        }
        Command::Migrate => {
            store::ensure_database(&config.database_url, &config.db).await?;
            let pool = store::connect(&config.database_url, &config.db)?;
            store::migrate(&pool).await?;
            eprintln!("migrations applied");
            Ok(())
        }
        Command::Import {
            file,
            org,
            format,
            rejects,
            create_customers,
            json,
        } => {
            let organization = insights::domain::OrganizationId::parse(&org)
                .map_err(|_| anyhow::anyhow!("--org must be an organization id (a UUID)"))?;
            let format = match format.as_deref() {
                None => insights::import::Format::from_path(&file),
                Some("ndjson") => insights::import::Format::Ndjson,
                Some("csv") => insights::import::Format::Csv,
                Some(other) => anyhow::bail!("--format {other:?} is not ndjson or csv"),
            };
            let rejects = rejects.unwrap_or_else(|| {
                let mut name = file.clone().into_os_string();
                name.push(".rejects.ndjson");
                name.into()
            });
            let pool = store::connect(&config.database_url, &config.db)?;
            store::migrate(&pool).await?;
            let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let opts = insights::import::ImportOptions {
                file,
                organization,
                format,
                rejects,
                create_customers,
                progress,
            };
            let summary = insights::import::run(&pool, &config, &opts).await?;
            if json {
                println!("{}", serde_json::to_string(&summary)?);
            } else {
                println!(
                    "imported {} rows in {:.1} s: {} created, {} duplicates, {} rejected{}",
                    summary.rows,
                    summary.elapsed_ms as f64 / 1000.0,
                    summary.created,
                    summary.duplicates,
                    summary.rejected,
                    summary
                        .rejects_file
                        .as_deref()
                        .map(|f| format!(" (see {f})"))
                        .unwrap_or_default()
                );
            }
            Ok(())
        }
        Command::Org {
            command:
                OrgCommand::Create {
                    name,
                    admin_email,
                    admin_password,
                    admin_name,
                    json,
                },
        } => {
            let org_name = PersonName::parse(&name).map_err(|e| anyhow::anyhow!("--name {e}"))?;
            let email = Email::parse(&admin_email).map_err(|e| anyhow::anyhow!("--admin-email {e}"))?;
            let password =
                Password::parse(&admin_password).map_err(|e| anyhow::anyhow!("--admin-password {e}"))?;
            let default_name = email.as_str().split('@').next().unwrap_or("admin").to_owned();
            let admin_name = PersonName::parse(admin_name.as_deref().unwrap_or(&default_name))
                .map_err(|e| anyhow::anyhow!("--admin-name {e}"))?;
            store::ensure_database(&config.database_url, &config.db).await?;
            let pool = store::connect(&config.database_url, &config.db)?;
            store::migrate(&pool).await?;
            let hash =
                insights::auth::hash_password(password.expose().to_owned(), config.auth.bcrypt_cost).await?;
            let (org, admin) =
                store::orgs::create_with_admin(&pool, org_name.as_str(), &email, &admin_name, &hash)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "organizationId": org, "adminUserId": admin.id })
                );
            } else {
                println!(
                    "created organization {org} with admin {} ({})",
                    admin.email, admin.id
                );
            }
            Ok(())
        }
    }
}

/// `insights demo`: prepares the demo organization, starts the node, waits for the model to score the
/// generated texts, prints where to log in, then keeps a live trickle going until stopped.
async fn run_demo(mut config: Config, opts: insights::demo::DemoOptions) -> anyhow::Result<()> {
    if let Some(path) = insights::demo::ensure_secret(&mut config)? {
        eprintln!(
            "INSIGHTS_JWT_SECRET is not set: the demo signs tokens with a secret it generated in {} (kept for the next run)",
            path.display()
        );
    }
    if let Some(path) = insights::demo::ensure_data_key(&mut config)? {
        eprintln!(
            "INSIGHTS_DATA_KEY is not set: the demo encrypts customers' names, emails and attributes with a key it generated in {} (kept for the next run)",
            path.display()
        );
    }
    store::ensure_database(&config.database_url, &config.db).await?;
    let pool = store::connect(&config.database_url, &config.db)?;
    store::migrate(&pool).await?;
    let (org, logins) = insights::demo::prepare(&pool, &config, &opts).await?;
    let listen = config.listen;
    let app = insights::App::build(config).await?;
    if app.state().ml.is_up() {
        insights::demo::wait_for_scores(&pool, org).await?;
    } else {
        eprintln!(
            "the sentiment model is not loaded (set ORT_DYLIB_PATH=$(scripts/ort.sh)): texts stay unscored"
        );
    }
    let host = if listen.ip().is_loopback() {
        "localhost".to_owned()
    } else {
        listen.ip().to_string()
    };
    println!();
    println!(
        "Insights demo is running: https://{host}:{}/",
        app.local_addr().port()
    );
    println!("(self-signed certificate: your browser will ask you to accept it)");
    for (email, password, role) in &logins.0 {
        println!("  {:<8} {email:<32} {password}", role.as_str());
    }
    println!("Passwords are new on every run. Ctrl-C stops the node; the data stays for the next run.");
    println!();
    let trickle = tokio::spawn(insights::demo::trickle(app.state().clone(), org, opts));
    let stopped = app.run_until_stopped().await;
    if let Ok(Err(e)) = trickle.await {
        tracing::warn!(error = %e, "the demo trickle stopped early");
    }
    stopped
}
