use std::process::ExitCode;

use clap::{Parser, Subcommand};
use prepd::config::ServeConfig;
use tracing_subscriber::EnvFilter;

/// Workers allocate and free many small strings and id vectors from several
/// threads at once; glibc's allocator spent about a fifth of a job's CPU
/// time on that (perf, 1M rows), mimalloc much less.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Transparent huge pages made the kernel zero 2 MiB at a time as the heap
/// grew: 15% of a job's CPU (perf, 1M rows), and 10% more wall time than
/// with them off for this process (the allocator's own `allow_thp=0` does
/// the same). Best effort: an old kernel that refuses changes nothing else.
#[cfg(target_os = "linux")]
fn disable_transparent_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments and touches no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

#[derive(Parser)]
#[command(
    name = "prepd",
    version,
    about = "Dataset preprocessing as a service: training artifacts and the same preprocessing at inference"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP service.
    Serve(ServeConfig),
    /// Run one job from the command line and write its artifacts to a directory.
    Run(prepd::cli::RunArgs),
    /// Print the OpenAPI document.
    Openapi,
    /// Time each stage of a job alone, in process, on a local file, and the
    /// `tokenizers` crate's general pipeline on the same texts (bench/run.sh).
    BenchStages(prepd::bench::BenchArgs),
}

fn init_logging() {
    let filter = EnvFilter::try_from_env("PREPD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("PREPD_LOG_FORMAT").is_ok_and(|f| f == "json");
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    #[cfg(target_os = "linux")]
    disable_transparent_huge_pages();
    let cli = Cli::parse();
    match cli.command {
        Command::Openapi => {
            print!("{}", prepd::api::openapi::document());
            ExitCode::SUCCESS
        }
        Command::Serve(config) => {
            init_logging();
            let listener = match tokio::net::TcpListener::bind(config.addr).await {
                Ok(listener) => listener,
                Err(e) => {
                    eprintln!("prepd: cannot listen on {}: {e}", config.addr);
                    return ExitCode::FAILURE;
                }
            };
            match listener.local_addr() {
                Ok(addr) => eprintln!("prepd listening on http://{addr}"),
                Err(e) => tracing::warn!(error = %e, "cannot read the bound address"),
            }
            tracing::info!(data_dir = %config.common.data_dir.display(), workers = config.common.workers, "prepd serving");
            match prepd::server::serve(config, listener, prepd::server::stop_signal()).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("prepd: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::BenchStages(args) => match tokio::task::spawn_blocking(move || prepd::bench::run(&args)).await {
            Ok(Ok(_)) => ExitCode::SUCCESS,
            Ok(Err(e)) => {
                eprintln!("prepd: {e}");
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("prepd: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Run(args) => {
            let out = args.out.clone();
            match prepd::cli::run(args).await {
                Ok(manifest) => {
                    let rows = &manifest.rows;
                    eprintln!(
                        "prepd: wrote {} (train {} rows, validation {} rows, {} classes) to {}",
                        manifest.artifacts.len() + 1,
                        rows.train,
                        rows.validation,
                        manifest.class_to_index.len(),
                        out.display()
                    );
                    // Everything is written: exit without tearing down the
                    // workers' heaps, which took a large job tens of
                    // milliseconds and hands back nothing the exit does not.
                    std::process::exit(0)
                }
                Err(e) => {
                    eprintln!("prepd: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
