//! `toaster`: JAMNet's headless peer and test bench.

use clap::{Parser, Subcommand};

mod decode;
mod plc;

#[derive(Parser)]
#[command(
    name = "toaster",
    version,
    about = "JAMNet headless peer and test bench (TOAST v2)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Decode one TOAST v2 frame given as hex and print it as JSON.
    Decode(decode::Args),
    /// Evaluate the packet-loss concealment methods on the instrument corpus.
    PlcEval(plc::EvalArgs),
    /// Conceal a WAV file given a per-packet loss mask.
    Conceal(plc::ConcealArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Decode(args) => decode::run(args),
        Command::PlcEval(args) => plc::run_eval(args),
        Command::Conceal(args) => plc::run_conceal(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("toaster: {err:#}");
            std::process::ExitCode::from(2)
        }
    }
}
