//! `toaster`: JAMNet's headless peer and test bench.

use clap::{Parser, Subcommand};

mod bench;
mod bench_net;
mod decode;
mod live;
mod plc;
mod sync;

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
    /// Measure: `toaster bench codec`, `toaster bench net`, `toaster bench midi`.
    Bench(bench::Args),
    /// Join a session, announce, list peers as they come and go.
    Peer(live::PeerArgs),
    /// Send a tone or WAV (plain or JELLIE) and optional demo MIDI.
    Send(live::SendArgs),
    /// Receive every stream heard; summary of peers, MIDI, audio, drops.
    Recv(live::RecvArgs),
    /// Two peers in one process over loopback UDP through a lossy link: see it work.
    Demo(live::DemoArgs),
    /// Evaluate the packet-loss concealment methods on the instrument corpus.
    PlcEval(plc::EvalArgs),
    /// Conceal a WAV file given a per-packet loss mask.
    Conceal(plc::ConcealArgs),
    /// Clock/transport sync of N peers on the simulated network.
    Sync(sync::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Decode(args) => decode::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Peer(args) => live::peer(args),
        Command::Send(args) => live::send(args),
        Command::Recv(args) => live::recv(args),
        Command::Demo(args) => live::demo(args),
        Command::PlcEval(args) => plc::run_eval(args),
        Command::Conceal(args) => plc::run_conceal(args),
        Command::Sync(args) => sync::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("toaster: {err:#}");
            std::process::ExitCode::from(2)
        }
    }
}
