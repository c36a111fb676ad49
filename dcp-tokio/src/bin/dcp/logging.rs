//! Log output of the `dcp` command: `tracing` events of the library on
//! stderr, filtered by `--log-level` or `RUST_LOG` (off when neither is
//! given). Document keys stay redacted unless `dcp tail --log-keys`;
//! values are never logged.

use tracing_subscriber::EnvFilter;

/// Installs the stderr subscriber. `level` (`--log-level`) wins over
/// `RUST_LOG`; both take the `RUST_LOG` syntax (`info`,
/// `dcp_proto=debug,warn`, ...).
pub(crate) fn init(level: Option<&str>) -> Result<(), String> {
    let filter = match level {
        Some(directives) => EnvFilter::try_new(directives)
            .map_err(|err| format!("invalid --log-level {directives:?}: {err}"))?,
        None => match std::env::var("RUST_LOG") {
            Ok(directives) if !directives.trim().is_empty() => EnvFilter::try_new(&directives)
                .map_err(|err| format!("invalid RUST_LOG {directives:?}: {err}"))?,
            _ => return Ok(()),
        },
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init()
        .map_err(|err| format!("cannot install the log subscriber: {err}"))
}
