//! A thin CLAP layer between the host and nice-plug's CLAP wrapper.
//!
//! nice-plug's CLAP wrapper covers everything the plugins need except two
//! things a transport follower must have:
//!
//! - **MIDI system messages as MIDI events.** nice-plug's event API has no
//!   variant for MIDI Clock (F8), Start/Continue/Stop (FA/FB/FC), Song
//!   Position Pointer (F2) or MTC quarter frames (F1); the plugins send them
//!   as raw bytes in a `NoteEvent::MidiSysEx`, which nice-plug hands to a
//!   CLAP host as `CLAP_EVENT_MIDI_SYSEX` events. Hosts route system
//!   real-time messages from `CLAP_EVENT_MIDI` events, and many drop a SysEx
//!   buffer that does not start with F0. The shim's `process` gives nice-plug
//!   an output-event list of its own that rewrites every 1–3 byte SysEx event
//!   whose first byte is a system status (F1–FF except F0/F7) into a
//!   `CLAP_EVENT_MIDI` event with those bytes, on the same sample and port,
//!   and passes every other event through untouched.
//! - **The host's transport-control extension** (`clap.transport-control`),
//!   through which a plugin asks the host to start, stop or locate. nice-plug
//!   does not hand its plugins the `clap_host`, so the shim keeps it in a
//!   [`HostLink`] that the plugin picks up while it is constructed
//!   ([`HostLink::for_new_instance`]). Requests are posted from the audio
//!   thread and served on the main thread (CLAP requires that) in the shim's
//!   `on_main_thread`.
//!
//! Everything else goes straight to nice-plug: the shim's `clap_plugin` has
//! nice-plug's `plugin_data`, so every extension function nice-plug returns
//! from `get_extension` (which the host calls with the shim's pointer) finds
//! nice-plug's wrapper as usual. Export a plugin with
//! [`jamnet_export_clap!`](crate::jamnet_export_clap) instead of
//! `nice_export_clap!`.

use clap_sys::events::{
    clap_event_header, clap_event_midi, clap_event_midi_sysex, clap_output_events,
    CLAP_CORE_EVENT_SPACE_ID, CLAP_EVENT_MIDI, CLAP_EVENT_MIDI_SYSEX,
};
use clap_sys::ext::draft::transport_control::clap_host_transport_control;
use clap_sys::fixedpoint::CLAP_BEATTIME_FACTOR;
use clap_sys::host::clap_host;
use clap_sys::plugin::clap_plugin;
use clap_sys::process::{clap_process, clap_process_status, CLAP_PROCESS_ERROR};
use std::cell::RefCell;
use std::ffi::{c_char, c_void, CStr};
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

/// The extension ids a host may offer transport control under: CLAP 1.2's
/// and the draft id hosts shipped before it (same function table).
const TRANSPORT_CONTROL_IDS: [&CStr; 2] = [
    c"clap.transport-control/1",
    c"clap.transport-control.draft/0",
];

/// What the plugin wants the host's transport to do. The latest request wins
/// until the main thread serves it.
///
/// Thread-safe: yes (`Copy` value). Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HostRequest {
    /// Locate to this position (quarter notes) and play from there.
    PlayFrom(f64),
    /// Stop where the transport is, then locate to this position (quarter
    /// notes), so that a later start resumes where the session stopped.
    StopAt(f64),
    /// Locate to this position (quarter notes) without changing play state.
    Locate(f64),
}

/// Whether the host offers transport control to this instance.
///
/// Thread-safe: yes (`Copy` value). Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportControl {
    /// Not known yet (before the host initialised the plugin).
    Unknown,
    /// The host offers `clap.transport-control`.
    Offered,
    /// A CLAP host without the extension.
    NotOffered,
}

const KIND_NONE: u8 = 0;
const KIND_PLAY: u8 = 1;
const KIND_STOP: u8 = 2;
const KIND_LOCATE: u8 = 3;

/// The plugin's line to its CLAP host.
///
/// Thread-safe: yes. Realtime-safe: [`HostLink::request`] and the readers
/// are (atomics and the host's thread-safe `request_callback`); serving runs
/// on the main thread only.
pub struct HostLink {
    host: *const clap_host,
    /// The host's transport-control table, null if not offered. Set once on
    /// the main thread in `init`.
    transport: AtomicPtr<clap_host_transport_control>,
    offered: AtomicU8,
    /// One of the `KIND_*` constants: the pending request.
    pending: AtomicU8,
    /// The pending request's position, f64 bits (quarter notes).
    pending_beats: AtomicU64,
    requested: AtomicU64,
    served: AtomicU64,
}

// SAFETY: `host` points to the host's `clap_host`, which CLAP keeps valid
// from `create_plugin` until the plugin's `destroy`; the shim owns the last
// reference that outlives the plugin and never uses the pointer after
// `destroy`. Through it the link calls only `request_callback` (thread-safe
// by the CLAP spec) from any thread, and `get_extension` and the transport
// control functions only from the main thread (`init`, `on_main_thread`).
// Everything else is atomics.
unsafe impl Send for HostLink {}
// SAFETY: see `Send`: all shared state is atomic.
unsafe impl Sync for HostLink {}

thread_local! {
    /// The link of the instance being constructed on this thread, set by the
    /// shim around nice-plug's `Wrapper::new` (which builds the plugin with
    /// `Default::default()` on the calling thread).
    static CREATING: RefCell<Option<Arc<HostLink>>> = const { RefCell::new(None) };
}

impl HostLink {
    fn new(host: *const clap_host) -> Self {
        Self {
            host,
            transport: AtomicPtr::new(std::ptr::null_mut()),
            offered: AtomicU8::new(0),
            pending: AtomicU8::new(KIND_NONE),
            pending_beats: AtomicU64::new(0),
            requested: AtomicU64::new(0),
            served: AtomicU64::new(0),
        }
    }

    /// The link of the instance under construction, for the plugin's
    /// `Default`: `Some` when a CLAP host created it through the shim,
    /// `None` under VST3, in tests and in any other construction.
    pub fn for_new_instance() -> Option<Arc<HostLink>> {
        CREATING.with(|c| c.borrow().clone())
    }

    /// Whether the host offers transport control.
    pub fn transport_control(&self) -> TransportControl {
        match self.offered.load(Ordering::Acquire) {
            1 => TransportControl::Offered,
            2 => TransportControl::NotOffered,
            _ => TransportControl::Unknown,
        }
    }

    /// Post a transport request; the host is asked for a main-thread
    /// callback, in which the request is served. Realtime-safe. Returns
    /// false (and posts nothing) when the host offers no transport control.
    pub fn request(&self, request: HostRequest) -> bool {
        if self.transport_control() != TransportControl::Offered {
            return false;
        }
        let (kind, beats) = match request {
            HostRequest::PlayFrom(b) => (KIND_PLAY, b),
            HostRequest::StopAt(b) => (KIND_STOP, b),
            HostRequest::Locate(b) => (KIND_LOCATE, b),
        };
        // Position first, kind second (release): the server that takes the
        // kind sees this position or a newer one, never an older one.
        self.pending_beats.store(beats.to_bits(), Ordering::Relaxed);
        self.pending.store(kind, Ordering::Release);
        self.requested.fetch_add(1, Ordering::Relaxed);
        // SAFETY: see `unsafe impl Send`: valid until destroy, and
        // `request_callback` is thread-safe.
        unsafe {
            if let Some(cb) = (*self.host).request_callback {
                cb(self.host);
            }
        }
        true
    }

    /// Requests posted so far.
    pub fn requested(&self) -> u64 {
        self.requested.load(Ordering::Relaxed)
    }

    /// Requests handed to the host so far (coalesced: a request replaced
    /// before the main thread ran is not served).
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Main thread, after the host initialised the plugin: look up the
    /// host's transport-control table.
    ///
    /// # Safety
    /// Main thread, between `init` and `destroy`.
    unsafe fn discover(&self) {
        // SAFETY: main thread between init and destroy (caller), host valid.
        let table = unsafe {
            match (*self.host).get_extension {
                Some(get) => TRANSPORT_CONTROL_IDS
                    .iter()
                    .map(|id| get(self.host, id.as_ptr()))
                    .find(|p| !p.is_null())
                    .unwrap_or(std::ptr::null()),
                None => std::ptr::null(),
            }
        };
        self.transport
            .store(table as *mut clap_host_transport_control, Ordering::Release);
        self.offered
            .store(if table.is_null() { 2 } else { 1 }, Ordering::Release);
    }

    /// Main thread: hand the pending request, if any, to the host.
    ///
    /// # Safety
    /// Main thread, between `init` and `destroy`.
    unsafe fn serve(&self) {
        let kind = self.pending.swap(KIND_NONE, Ordering::Acquire);
        if kind == KIND_NONE {
            return;
        }
        let table = self.transport.load(Ordering::Acquire);
        if table.is_null() {
            return;
        }
        let beats = f64::from_bits(self.pending_beats.load(Ordering::Relaxed));
        let beattime = (beats.max(0.0) * CLAP_BEATTIME_FACTOR as f64).round() as i64;
        // SAFETY: main thread (caller); `table` came from the host's
        // get_extension and stays valid while the host is (CLAP).
        unsafe {
            let t = &*table;
            match kind {
                KIND_PLAY => {
                    // request_start would jump to the host's start marker
                    // first; locate + continue plays from our position.
                    if let Some(jump) = t.request_jump {
                        jump(self.host, beattime);
                    }
                    if let Some(cont) = t.request_continue {
                        cont(self.host);
                    }
                }
                KIND_STOP => {
                    // request_stop would return to the start marker; pause
                    // stays put, then locate to where the session stopped.
                    if let Some(pause) = t.request_pause {
                        pause(self.host);
                    }
                    if let Some(jump) = t.request_jump {
                        jump(self.host, beattime);
                    }
                }
                _ => {
                    if let Some(jump) = t.request_jump {
                        jump(self.host, beattime);
                    }
                }
            }
        }
        self.served.fetch_add(1, Ordering::Relaxed);
    }
}

/// The shim's plugin object. `clap` must stay the first field: the shim's
/// functions get `&clap` back from the host and cast it to the whole.
#[repr(C)]
struct Shim {
    clap: clap_plugin,
    inner: *const clap_plugin,
    link: Arc<HostLink>,
}

impl Shim {
    /// # Safety
    /// `plugin` is a pointer the shim handed out (the `clap` field of a live
    /// boxed `Shim`).
    unsafe fn from_clap<'a>(plugin: *const clap_plugin) -> &'a Shim {
        // SAFETY: `clap` is the first field of a `repr(C)` struct, so a
        // pointer to it is a pointer to the `Shim` (caller's contract).
        unsafe { &*(plugin as *const Shim) }
    }
}

/// Build the instance with `make` (nice-plug's `Wrapper::new` for the plugin
/// type) and wrap it. Used by [`jamnet_export_clap!`](crate::jamnet_export_clap).
///
/// # Safety
/// Called from the factory's `create_plugin` with the host's pointer; `make`
/// returns nice-plug's `clap_plugin` pointer (or null).
pub unsafe fn create(
    host: *const clap_host,
    make: impl FnOnce() -> *const clap_plugin,
) -> *const clap_plugin {
    if host.is_null() {
        return std::ptr::null();
    }
    let link = Arc::new(HostLink::new(host));
    let previous = CREATING.with(|c| c.replace(Some(link.clone())));
    let inner = make();
    CREATING.with(|c| *c.borrow_mut() = previous);
    if inner.is_null() {
        return std::ptr::null();
    }
    // SAFETY: `inner` is nice-plug's live plugin object (caller's contract).
    let inner_ref = unsafe { &*inner };
    let shim = Box::new(Shim {
        clap: clap_plugin {
            desc: inner_ref.desc,
            // nice-plug's extension functions find their wrapper through
            // this when the host calls them with the shim's pointer.
            plugin_data: inner_ref.plugin_data,
            init: Some(shim_init),
            destroy: Some(shim_destroy),
            activate: Some(shim_activate),
            deactivate: Some(shim_deactivate),
            start_processing: Some(shim_start_processing),
            stop_processing: Some(shim_stop_processing),
            reset: Some(shim_reset),
            process: Some(shim_process),
            get_extension: Some(shim_get_extension),
            on_main_thread: Some(shim_on_main_thread),
        },
        inner,
        link,
    });
    // The host owns it until `destroy`, which turns it back into a Box.
    Box::into_raw(shim) as *const clap_plugin
}

unsafe extern "C" fn shim_init(plugin: *const clap_plugin) -> bool {
    // SAFETY: the host calls this with the pointer `create` returned; the
    // inner functions are called with nice-plug's own pointer as it expects.
    unsafe {
        let shim = Shim::from_clap(plugin);
        let ok = match (*shim.inner).init {
            Some(f) => f(shim.inner),
            None => true,
        };
        if ok {
            // init runs on the main thread; the host may be queried from now.
            shim.link.discover();
        }
        ok
    }
}

unsafe extern "C" fn shim_destroy(plugin: *const clap_plugin) {
    // SAFETY: as in shim_init; after this the host never uses `plugin`
    // again, so the Box made in `create` is taken back and dropped.
    unsafe {
        let shim = Box::from_raw(plugin as *mut Shim);
        if let Some(f) = (*shim.inner).destroy {
            f(shim.inner);
        }
    }
}

unsafe extern "C" fn shim_activate(
    plugin: *const clap_plugin,
    sample_rate: f64,
    min_frames: u32,
    max_frames: u32,
) -> bool {
    // SAFETY: as in shim_init.
    unsafe {
        let shim = Shim::from_clap(plugin);
        match (*shim.inner).activate {
            Some(f) => f(shim.inner, sample_rate, min_frames, max_frames),
            None => false,
        }
    }
}

unsafe extern "C" fn shim_deactivate(plugin: *const clap_plugin) {
    // SAFETY: as in shim_init.
    unsafe {
        let shim = Shim::from_clap(plugin);
        if let Some(f) = (*shim.inner).deactivate {
            f(shim.inner);
        }
    }
}

unsafe extern "C" fn shim_start_processing(plugin: *const clap_plugin) -> bool {
    // SAFETY: as in shim_init.
    unsafe {
        let shim = Shim::from_clap(plugin);
        match (*shim.inner).start_processing {
            Some(f) => f(shim.inner),
            None => true,
        }
    }
}

unsafe extern "C" fn shim_stop_processing(plugin: *const clap_plugin) {
    // SAFETY: as in shim_init.
    unsafe {
        let shim = Shim::from_clap(plugin);
        if let Some(f) = (*shim.inner).stop_processing {
            f(shim.inner);
        }
    }
}

unsafe extern "C" fn shim_reset(plugin: *const clap_plugin) {
    // SAFETY: as in shim_init.
    unsafe {
        let shim = Shim::from_clap(plugin);
        if let Some(f) = (*shim.inner).reset {
            f(shim.inner);
        }
    }
}

unsafe extern "C" fn shim_get_extension(
    plugin: *const clap_plugin,
    id: *const c_char,
) -> *const c_void {
    // SAFETY: as in shim_init. The tables nice-plug returns take the
    // plugin pointer and read only `plugin_data`, which the shim shares.
    unsafe {
        let shim = Shim::from_clap(plugin);
        match (*shim.inner).get_extension {
            Some(f) => f(shim.inner, id),
            None => std::ptr::null(),
        }
    }
}

unsafe extern "C" fn shim_on_main_thread(plugin: *const clap_plugin) {
    // SAFETY: as in shim_init; on_main_thread runs on the main thread.
    unsafe {
        let shim = Shim::from_clap(plugin);
        if let Some(f) = (*shim.inner).on_main_thread {
            f(shim.inner);
        }
        shim.link.serve();
    }
}

/// The output-event list nice-plug writes into during one `process` call.
#[repr(C)]
struct EventFilter {
    /// First field: the list handed to nice-plug is `&filter.list`.
    list: clap_output_events,
    host: *const clap_output_events,
}

unsafe extern "C" fn shim_process(
    plugin: *const clap_plugin,
    process: *const clap_process,
) -> clap_process_status {
    // SAFETY: as in shim_init; `process` is valid for this call (CLAP).
    unsafe {
        let shim = Shim::from_clap(plugin);
        let Some(inner_process) = (*shim.inner).process else {
            return CLAP_PROCESS_ERROR;
        };
        if process.is_null() || (*process).out_events.is_null() {
            return inner_process(shim.inner, process);
        }
        let mut filter = EventFilter {
            list: clap_output_events {
                ctx: std::ptr::null_mut(),
                try_push: Some(filter_try_push),
            },
            host: (*process).out_events,
        };
        filter.list.ctx = &mut filter as *mut EventFilter as *mut c_void;
        let mut ours = *process;
        ours.out_events = &filter.list;
        inner_process(shim.inner, &ours)
    }
}

/// The bytes of a SysEx event that are really one MIDI system common or
/// real-time message, as a 3-byte MIDI event payload; `None` for a real
/// SysEx (F0…F7) or anything else.
pub fn system_message_bytes(buffer: &[u8]) -> Option<[u8; 3]> {
    let status = *buffer.first()?;
    if !(1..=3).contains(&buffer.len()) || status < 0xF1 || status == 0xF7 {
        return None;
    }
    if buffer[1..].iter().any(|b| b & 0x80 != 0) {
        // Data bytes have the top bit clear; this is not one message.
        return None;
    }
    let mut data = [0u8; 3];
    data[..buffer.len()].copy_from_slice(buffer);
    Some(data)
}

unsafe extern "C" fn filter_try_push(
    list: *const clap_output_events,
    event: *const clap_event_header,
) -> bool {
    // SAFETY: `list` is the `list` field (first, repr(C)) of the live
    // EventFilter on shim_process's stack, whose ctx points at it; `event`
    // is valid for this call (CLAP); a header of type MIDI_SYSEX in the core
    // space heads a clap_event_midi_sysex whose buffer holds `size` bytes
    // for this call.
    unsafe {
        let filter = &*((*list).ctx as *const EventFilter);
        let host = &*filter.host;
        let Some(push) = host.try_push else {
            return false;
        };
        let header = &*event;
        if header.space_id == CLAP_CORE_EVENT_SPACE_ID && header.type_ == CLAP_EVENT_MIDI_SYSEX {
            let sysex = &*(event as *const clap_event_midi_sysex);
            if !sysex.buffer.is_null() {
                let bytes = std::slice::from_raw_parts(sysex.buffer, sysex.size as usize);
                if let Some(data) = system_message_bytes(bytes) {
                    let midi = clap_event_midi {
                        header: clap_event_header {
                            size: std::mem::size_of::<clap_event_midi>() as u32,
                            time: header.time,
                            space_id: CLAP_CORE_EVENT_SPACE_ID,
                            type_: CLAP_EVENT_MIDI,
                            flags: header.flags,
                        },
                        port_index: sysex.port_index,
                        data,
                    };
                    return push(filter.host, &midi.header);
                }
            }
        }
        push(filter.host, event)
    }
}

/// Export one nice-plug plugin type as CLAP through the shim (replaces
/// `nice_export_clap!`). The crate must depend on `nice-plug`.
#[macro_export]
macro_rules! jamnet_export_clap {
    ($plugin_ty:ty) => {
        #[doc(hidden)]
        mod jamnet_clap_entry {
            use super::*;
            use ::nice_plug::wrapper::clap::{
                clap_host, clap_plugin, clap_plugin_descriptor, clap_plugin_entry,
                clap_plugin_factory, PluginDescriptor, Wrapper, CLAP_PLUGIN_FACTORY_ID,
                CLAP_VERSION,
            };
            use ::std::ffi::{c_char, c_void, CStr};
            use ::std::sync::{Arc, OnceLock};

            static DESCRIPTOR: OnceLock<PluginDescriptor> = OnceLock::new();

            fn descriptor() -> &'static PluginDescriptor {
                DESCRIPTOR.get_or_init(PluginDescriptor::for_plugin::<$plugin_ty>)
            }

            unsafe extern "C" fn get_plugin_count(_factory: *const clap_plugin_factory) -> u32 {
                1
            }

            unsafe extern "C" fn get_plugin_descriptor(
                _factory: *const clap_plugin_factory,
                index: u32,
            ) -> *const clap_plugin_descriptor {
                if index == 0 {
                    descriptor().clap_plugin_descriptor()
                } else {
                    ::std::ptr::null()
                }
            }

            unsafe extern "C" fn create_plugin(
                _factory: *const clap_plugin_factory,
                host: *const clap_host,
                plugin_id: *const c_char,
            ) -> *const clap_plugin {
                if plugin_id.is_null() {
                    return ::std::ptr::null();
                }
                // SAFETY: a non-null id is a C string (CLAP).
                if unsafe { CStr::from_ptr(plugin_id) } != descriptor().clap_id() {
                    return ::std::ptr::null();
                }
                // SAFETY: called by the host's factory call with its host
                // pointer; nice-plug's wrapper is leaked into a raw Arc that
                // its own destroy takes back (as nice_export_clap! does).
                unsafe {
                    $crate::clap_shim::create(host, || {
                        (*Arc::into_raw(Wrapper::<$plugin_ty>::new(host)))
                            .clap_plugin
                            .as_ptr() as *const clap_plugin
                    })
                }
            }

            static FACTORY: clap_plugin_factory = clap_plugin_factory {
                get_plugin_count: Some(get_plugin_count),
                get_plugin_descriptor: Some(get_plugin_descriptor),
                create_plugin: Some(create_plugin),
            };

            extern "C" fn init(_plugin_path: *const c_char) -> bool {
                ::nice_plug::wrapper::setup_logger::<$plugin_ty>();
                true
            }

            extern "C" fn deinit() {}

            extern "C" fn get_factory(factory_id: *const c_char) -> *const c_void {
                // SAFETY: a non-null id is a C string (CLAP).
                if !factory_id.is_null()
                    && unsafe { CStr::from_ptr(factory_id) } == CLAP_PLUGIN_FACTORY_ID
                {
                    &FACTORY as *const clap_plugin_factory as *const c_void
                } else {
                    ::std::ptr::null()
                }
            }

            pub(super) const ENTRY: clap_plugin_entry = clap_plugin_entry {
                clap_version: CLAP_VERSION,
                init: Some(init),
                deinit: Some(deinit),
                get_factory: Some(get_factory),
            };
        }

        /// The CLAP plugin's entry point (through JAMNet's CLAP shim).
        #[unsafe(no_mangle)]
        #[used]
        pub static clap_entry: ::nice_plug::wrapper::clap::clap_plugin_entry =
            jamnet_clap_entry::ENTRY;
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_messages_are_recognised_and_sysex_is_not() {
        assert_eq!(system_message_bytes(&[0xF8]), Some([0xF8, 0, 0]));
        assert_eq!(system_message_bytes(&[0xFA]), Some([0xFA, 0, 0]));
        assert_eq!(system_message_bytes(&[0xF1, 0x23]), Some([0xF1, 0x23, 0]));
        assert_eq!(system_message_bytes(&[0xF2, 64, 1]), Some([0xF2, 64, 1]));
        // Real SysEx, end-of-SysEx, channel messages, bad lengths and data
        // bytes with the top bit set are passed through untouched.
        assert_eq!(system_message_bytes(&[0xF0, 0x7F, 0xF7]), None);
        assert_eq!(system_message_bytes(&[0xF7]), None);
        assert_eq!(system_message_bytes(&[0x90, 60, 100]), None);
        assert_eq!(system_message_bytes(&[]), None);
        assert_eq!(system_message_bytes(&[0xF2, 1, 2, 3]), None);
        assert_eq!(system_message_bytes(&[0xF2, 0x80, 0]), None);
    }

    #[test]
    fn a_link_made_outside_the_shim_has_no_host() {
        assert!(HostLink::for_new_instance().is_none());
    }

    // A fake host and a fake inner plugin, in C terms, to drive the shim
    // the way a CLAP host and nice-plug do.
    use std::sync::Mutex;

    static LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());

    fn log(s: String) {
        LOG.lock().unwrap().push(s);
    }

    unsafe extern "C" fn host_get_extension(
        _host: *const clap_host,
        id: *const c_char,
    ) -> *const c_void {
        // SAFETY: the shim passes C strings.
        let id = unsafe { CStr::from_ptr(id) };
        if id == c"clap.transport-control.draft/0" {
            &HOST_TRANSPORT as *const clap_host_transport_control as *const c_void
        } else {
            std::ptr::null()
        }
    }
    unsafe extern "C" fn host_request_callback(_host: *const clap_host) {
        log("request_callback".into());
    }
    unsafe extern "C" fn tc_jump(_host: *const clap_host, pos: i64) {
        log(format!("jump {}", pos as f64 / CLAP_BEATTIME_FACTOR as f64));
    }
    unsafe extern "C" fn tc_continue(_host: *const clap_host) {
        log("continue".into());
    }
    unsafe extern "C" fn tc_pause(_host: *const clap_host) {
        log("pause".into());
    }
    static HOST_TRANSPORT: clap_host_transport_control = clap_host_transport_control {
        request_start: None,
        request_stop: None,
        request_continue: Some(tc_continue),
        request_pause: Some(tc_pause),
        request_toggle_play: None,
        request_jump: Some(tc_jump),
        request_loop_region: None,
        request_toggle_loop: None,
        request_enable_loop: None,
        request_record: None,
        request_toggle_record: None,
    };

    /// The inner plugin's process: pushes a MIDI Clock, an SPP, a real
    /// SysEx and a note-on SysEx-shaped event through the out list, and
    /// checks that the plugin data it sees is its own.
    unsafe extern "C" fn inner_process(
        plugin: *const clap_plugin,
        process: *const clap_process,
    ) -> clap_process_status {
        // SAFETY: the shim passes the inner pointer and a valid process.
        unsafe {
            assert_eq!((*plugin).plugin_data as usize, 0xDA7A);
            let out = &*(*process).out_events;
            let push = out.try_push.unwrap();
            for (time, bytes) in [
                (3u32, &[0xF8u8][..]),
                (5, &[0xF2, 64, 0][..]),
                (7, &[0xF0, 0x7F, 0x01, 0xF7][..]),
            ] {
                let ev = clap_event_midi_sysex {
                    header: clap_event_header {
                        size: std::mem::size_of::<clap_event_midi_sysex>() as u32,
                        time,
                        space_id: CLAP_CORE_EVENT_SPACE_ID,
                        type_: CLAP_EVENT_MIDI_SYSEX,
                        flags: 0,
                    },
                    port_index: 0,
                    buffer: bytes.as_ptr(),
                    size: bytes.len() as u32,
                };
                assert!(push(out, &ev.header));
            }
        }
        1
    }
    unsafe extern "C" fn inner_init(plugin: *const clap_plugin) -> bool {
        // SAFETY: as above.
        unsafe { assert_eq!((*plugin).plugin_data as usize, 0xDA7A) };
        true
    }
    unsafe extern "C" fn inner_destroy(_plugin: *const clap_plugin) {
        log("inner destroy".into());
    }
    unsafe extern "C" fn inner_on_main_thread(_plugin: *const clap_plugin) {
        log("inner on_main_thread".into());
    }

    /// What the fake host's out list received: (time, type, bytes).
    static RECEIVED: Mutex<Vec<(u32, u16, Vec<u8>)>> = Mutex::new(Vec::new());

    unsafe extern "C" fn host_try_push(
        _list: *const clap_output_events,
        event: *const clap_event_header,
    ) -> bool {
        // SAFETY: the shim passes valid events of the type in the header.
        unsafe {
            let h = &*event;
            let bytes = if h.type_ == CLAP_EVENT_MIDI {
                (*(event as *const clap_event_midi)).data.to_vec()
            } else {
                let s = &*(event as *const clap_event_midi_sysex);
                std::slice::from_raw_parts(s.buffer, s.size as usize).to_vec()
            };
            RECEIVED.lock().unwrap().push((h.time, h.type_, bytes));
        }
        true
    }

    #[test]
    fn the_shim_turns_system_messages_into_midi_and_serves_transport_requests() {
        let host = clap_host {
            clap_version: clap_sys::version::CLAP_VERSION,
            host_data: std::ptr::null_mut(),
            name: c"test".as_ptr(),
            vendor: c"test".as_ptr(),
            url: c"".as_ptr(),
            version: c"0".as_ptr(),
            get_extension: Some(host_get_extension),
            request_restart: None,
            request_process: None,
            request_callback: Some(host_request_callback),
        };
        let inner = clap_plugin {
            desc: std::ptr::null(),
            plugin_data: 0xDA7A as *mut c_void,
            init: Some(inner_init),
            destroy: Some(inner_destroy),
            activate: None,
            deactivate: None,
            start_processing: None,
            stop_processing: None,
            reset: None,
            process: Some(inner_process),
            get_extension: None,
            on_main_thread: Some(inner_on_main_thread),
        };
        let mut link = None;
        // SAFETY: a valid host and inner plugin that outlive the shim.
        let plugin = unsafe {
            create(&host, || {
                link = HostLink::for_new_instance();
                &inner as *const clap_plugin
            })
        };
        let link = link.expect("the instance under construction sees its link");
        assert!(
            HostLink::for_new_instance().is_none(),
            "link leaked past create"
        );
        // SAFETY: driving the shim as a host would, on this (main) thread.
        unsafe {
            let p = &*plugin;
            assert_eq!(p.plugin_data as usize, 0xDA7A);
            assert_eq!(link.transport_control(), TransportControl::Unknown);
            assert!(
                !link.request(HostRequest::Locate(1.0)),
                "posted before init"
            );
            assert!((p.init.unwrap())(plugin));
            assert_eq!(link.transport_control(), TransportControl::Offered);

            let out = clap_output_events {
                ctx: std::ptr::null_mut(),
                try_push: Some(host_try_push),
            };
            let process = clap_process {
                steady_time: 0,
                frames_count: 64,
                transport: std::ptr::null(),
                audio_inputs: std::ptr::null(),
                audio_outputs: std::ptr::null_mut(),
                audio_inputs_count: 0,
                audio_outputs_count: 0,
                in_events: std::ptr::null(),
                out_events: &out,
            };
            assert_eq!((p.process.unwrap())(plugin, &process), 1);
            let got = RECEIVED.lock().unwrap().clone();
            assert_eq!(
                got,
                vec![
                    (3, CLAP_EVENT_MIDI, vec![0xF8, 0, 0]),
                    (5, CLAP_EVENT_MIDI, vec![0xF2, 64, 0]),
                    (7, CLAP_EVENT_MIDI_SYSEX, vec![0xF0, 0x7F, 0x01, 0xF7]),
                ]
            );

            // Two requests before the main thread runs: the latest wins.
            LOG.lock().unwrap().clear();
            assert!(link.request(HostRequest::StopAt(2.0)));
            assert!(link.request(HostRequest::PlayFrom(4.5)));
            (p.on_main_thread.unwrap())(plugin);
            (p.on_main_thread.unwrap())(plugin);
            assert_eq!(
                *LOG.lock().unwrap(),
                vec![
                    "request_callback",
                    "request_callback",
                    "inner on_main_thread",
                    "jump 4.5",
                    "continue",
                    "inner on_main_thread",
                ]
            );
            assert_eq!((link.requested(), link.served()), (2, 1));
            LOG.lock().unwrap().clear();
            assert!(link.request(HostRequest::StopAt(8.0)));
            (p.on_main_thread.unwrap())(plugin);
            (p.destroy.unwrap())(plugin);
            assert_eq!(
                *LOG.lock().unwrap(),
                vec![
                    "request_callback",
                    "inner on_main_thread",
                    "pause",
                    "jump 8",
                    "inner destroy",
                ]
            );
        }
    }
}
