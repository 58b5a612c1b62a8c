//! JAMNet Transport's parameters (short stable IDs: never rename them) and
//! persisted settings.

use std::sync::Arc;

use jamnet_plugin_kit::SessionSettings;
use nice_plug::prelude::*;
use parking_lot::RwLock;

/// Lead (publish the host's transport) or follow (show the session's).
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Publish this host's play/stop, position, tempo and time signature.
    #[id = "lead"]
    #[name = "Lead"]
    Lead,
    /// Follow the session: show the offset, emit MIDI clock/SPP/MTC.
    #[id = "follow"]
    #[name = "Follow"]
    Follow,
}

/// MTC frame rate.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum MtcRate {
    /// 24 fps.
    #[id = "24"]
    #[name = "24 fps"]
    Fps24,
    /// 25 fps.
    #[id = "25"]
    #[name = "25 fps"]
    Fps25,
    /// 29.97 fps drop-frame.
    #[id = "2997df"]
    #[name = "29.97 drop"]
    Fps2997Df,
    /// 30 fps.
    #[id = "30"]
    #[name = "30 fps"]
    Fps30,
}

/// Parameters and persisted settings of one JAMNet Transport instance.
///
/// Thread-safe: yes. Realtime-safe: parameter reads are; `process()` never
/// takes the persisted settings' lock.
#[derive(Params)]
pub struct TransportParams {
    /// Session, key, destination, peer name.
    #[persist = "session"]
    pub session: Arc<RwLock<SessionSettings>>,

    /// Lead or follow.
    #[id = "mode"]
    pub mode: EnumParam<Mode>,
    /// How often the leader re-announces its state while nothing changes.
    #[id = "annc"]
    pub announce_ms: IntParam,
    /// Follow: send MIDI Clock (24 ppqn) and Start/Stop/Continue.
    #[id = "clock"]
    pub midi_clock: BoolParam,
    /// Follow: send Song Position Pointer on start and seek.
    #[id = "spp"]
    pub spp: BoolParam,
    /// Follow: send MIDI Time Code quarter frames.
    #[id = "mtc"]
    pub mtc: BoolParam,
    /// MTC frame rate.
    #[id = "mtcfps"]
    pub mtc_rate: EnumParam<MtcRate>,
    /// Follow: ask the host to start/stop (CLAP transport-control) where it offers it.
    #[id = "hostctl"]
    pub host_control: BoolParam,
}

impl Default for TransportParams {
    fn default() -> Self {
        Self {
            session: Arc::new(RwLock::new(SessionSettings::default())),
            mode: EnumParam::new("Mode", Mode::Lead),
            announce_ms: IntParam::new(
                "Announce every",
                250,
                IntRange::Linear { min: 50, max: 2000 },
            )
            .with_unit(" ms"),
            midi_clock: BoolParam::new("MIDI Clock out", true),
            spp: BoolParam::new("Song Position out", true),
            mtc: BoolParam::new("MTC out", false),
            mtc_rate: EnumParam::new("MTC rate", MtcRate::Fps25),
            host_control: BoolParam::new("Host transport control", false),
        }
    }
}
