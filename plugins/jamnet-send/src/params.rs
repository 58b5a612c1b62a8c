//! JAMNet Send's parameters (short stable IDs: never rename them, hosts store
//! automation and presets by ID) and persisted text settings.

use std::sync::Arc;

use jamnet_plugin_kit::SessionSettings;
use nice_plug::prelude::*;
use parking_lot::RwLock;

/// Sample format on the wire (PROTOCOL.md section 4).
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireFormat {
    /// 16-bit integer.
    #[id = "i16"]
    #[name = "16-bit"]
    I16,
    /// 24-bit integer (3 bytes).
    #[id = "i24"]
    #[name = "24-bit"]
    I24,
    /// 32-bit float.
    #[id = "f32"]
    #[name = "32-bit float"]
    F32,
}

/// Parameters and persisted settings of one JAMNet Send instance.
///
/// Thread-safe: yes (parameters are atomics; the persisted settings sit in
/// `RwLock`s that only the editor, the worker and the host's state calls take,
/// never `process()`). Realtime-safe: the parameter reads are.
#[derive(Params)]
pub struct SendParams {
    /// Session, key, destination, peer name.
    #[persist = "session"]
    pub session: Arc<RwLock<SessionSettings>>,
    /// Name of this stream as receivers see it ("Vocals", "Bus 2").
    #[persist = "stream"]
    pub stream_name: Arc<RwLock<String>>,

    /// Sending on/off (audio still passes through when off).
    #[id = "on"]
    pub enabled: BoolParam,
    /// Sample format on the wire.
    #[id = "fmt"]
    pub format: EnumParam<WireFormat>,
    /// Send a mono input as JELLIE (four interleaved sub-streams, two redundant).
    #[id = "jellie"]
    pub jellie: BoolParam,
    /// Forward MIDI input as JMID.
    #[id = "midi"]
    pub midi: BoolParam,
    /// Copies of each MIDI event sent (burst), 1 = no redundancy.
    #[id = "burst"]
    pub burst: IntParam,
}

impl Default for SendParams {
    fn default() -> Self {
        Self {
            session: Arc::new(RwLock::new(SessionSettings::default())),
            stream_name: Arc::new(RwLock::new("Main".to_owned())),
            enabled: BoolParam::new("Send", true),
            format: EnumParam::new("Format", WireFormat::I24),
            jellie: BoolParam::new("JELLIE (mono)", false),
            midi: BoolParam::new("Send MIDI", true),
            burst: IntParam::new("MIDI burst", 3, IntRange::Linear { min: 1, max: 8 }),
        }
    }
}
