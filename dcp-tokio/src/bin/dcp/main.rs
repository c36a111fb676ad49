//! `dcp`: stream a Couchbase bucket's changes over DCP, or run a local DCP
//! server to develop and test against.

mod admin;
mod args;
mod checkpoint_file;
mod cluster_console;
mod collections;
mod load;
mod logging;
mod output;
mod serve;
mod serve_cluster;
mod stats_report;
mod tail;
mod tail_cluster;

use std::process::ExitCode;

use clap::Parser;

use crate::args::{Cli, Command};

/// A failure to report in one line.
#[derive(Debug)]
pub(crate) struct Failure(pub(crate) String);

impl<T: std::fmt::Display> From<T> for Failure {
    fn from(message: T) -> Self {
        Failure(message.to_string())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(message) = logging::init(cli.log_level.as_deref()) {
        eprintln!("error: {message}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Tail(args) => tail::run(args).await,
            Command::Admin(args) => admin::run(args).await,
        }
    });
    // Do not wait for tasks left running (a writer, an embedded server).
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(message)) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
