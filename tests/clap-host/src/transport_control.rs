//! The host side of CLAP's transport-control extension
//! (`clap.transport-control/1`), which clack-extensions does not provide:
//! the plugin asks, the harness records the request and its transport obeys
//! it between blocks, as a DAW's transport would.

use std::ffi::CStr;
use std::sync::Mutex;

use clack_host::extensions::prelude::*;
use clap_sys::ext::draft::transport_control::{
    clap_host_transport_control, CLAP_EXT_TRANSPORT_CONTROL,
};
use clap_sys::fixedpoint::{clap_beattime, CLAP_BEATTIME_FACTOR};

/// One request a plugin made.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TransportRequest {
    Start,
    Stop,
    Continue,
    Pause,
    TogglePlay,
    /// Locate, quarter notes.
    Jump(f64),
    /// Loop and record requests (the harness has no loop or record).
    Other,
}

/// Requests recorded by the shared handler, in order.
#[derive(Default)]
pub struct TransportRequests(Mutex<Vec<TransportRequest>>);

impl TransportRequests {
    pub fn push(&self, r: TransportRequest) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(r);
    }
    pub fn take(&self) -> Vec<TransportRequest> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// What the shared handler does with a request.
pub trait HostTransportControlImpl {
    fn transport_request(&self, r: TransportRequest);
}

/// The extension as clack sees it.
#[derive(Copy, Clone)]
pub struct HostTransportControl(
    #[allow(dead_code)] RawExtension<HostExtensionSide, clap_host_transport_control>,
);

// SAFETY: CLAP_EXT_TRANSPORT_CONTROL is the id of clap_host_transport_control
// (clap-sys, CLAP 1.2).
unsafe impl Extension for HostTransportControl {
    const IDENTIFIERS: &'static [&'static CStr] = &[CLAP_EXT_TRANSPORT_CONTROL];
    type ExtensionSide = HostExtensionSide;

    unsafe fn from_raw(raw: RawExtension<Self::ExtensionSide>) -> Self {
        // SAFETY: the caller guarantees the pointer is of this extension.
        unsafe { Self(raw.cast()) }
    }
}

// SAFETY: the table is the CLAP struct of this extension's host side.
unsafe impl<H> ExtensionImplementation<H> for HostTransportControl
where
    H: for<'a> HostHandlers<Shared<'a>: HostTransportControlImpl>,
{
    const IMPLEMENTATION: RawExtensionImplementation =
        RawExtensionImplementation::new(&clap_host_transport_control {
            request_start: Some(start::<H>),
            request_stop: Some(stop::<H>),
            request_continue: Some(cont::<H>),
            request_pause: Some(pause::<H>),
            request_toggle_play: Some(toggle::<H>),
            request_jump: Some(jump::<H>),
            request_loop_region: Some(loop_region::<H>),
            request_toggle_loop: Some(other::<H>),
            request_enable_loop: Some(enable_loop::<H>),
            request_record: Some(record_req::<H>),
            request_toggle_record: Some(other::<H>),
        });
}

fn record<H>(host: *const clap_host, r: TransportRequest)
where
    H: for<'a> HostHandlers<Shared<'a>: HostTransportControlImpl>,
{
    // SAFETY: `host` is the clap_host clack made for a host of type H.
    unsafe {
        HostWrapper::<H>::handle(host, |h| {
            h.shared().transport_request(r);
            Ok(())
        });
    }
}

unsafe extern "C" fn start<H>(host: *const clap_host)
where
    H: for<'a> HostHandlers<Shared<'a>: HostTransportControlImpl>,
{
    record::<H>(host, TransportRequest::Start)
}
unsafe extern "C" fn stop<H>(host: *const clap_host)
where
    H: for<'a> HostHandlers<Shared<'a>: HostTransportControlImpl>,
{
    record::<H>(host, TransportRequest::Stop)
}
unsafe extern "C" fn cont<H>(host: *const clap_host)
where
    H: for<'a> HostHandlers<Shared<'a>: HostTransportControlImpl>,
{
    record::<H>(host, TransportRequest::Continue)
}
unsafe extern "C" fn pause<H>(host: *const clap_host)
where
    H: for<'a> HostHandlers<Shared<'a>: HostTransportControlImpl>,
{
    record::<H>(host, TransportRequest::Pause)
}
unsafe extern "C" fn toggle<H>(host: *const clap_host)
where
    H: for<'a> HostHandlers<Shared<'a>: HostTransportControlImpl>,
{
    record::<H>(host, TransportRequest::TogglePlay)
}
unsafe extern "C" fn jump<H>(host: *const clap_host, position: clap_beattime)
where
    H: for<'a> HostHandlers<Shared<'a>: HostTransportControlImpl>,
{
    record::<H>(
        host,
        TransportRequest::Jump(position as f64 / CLAP_BEATTIME_FACTOR as f64),
    )
}
unsafe extern "C" fn loop_region<H>(host: *const clap_host, _s: clap_beattime, _d: clap_beattime)
where
    H: for<'a> HostHandlers<Shared<'a>: HostTransportControlImpl>,
{
    record::<H>(host, TransportRequest::Other)
}
unsafe extern "C" fn enable_loop<H>(host: *const clap_host, _on: bool)
where
    H: for<'a> HostHandlers<Shared<'a>: HostTransportControlImpl>,
{
    record::<H>(host, TransportRequest::Other)
}
unsafe extern "C" fn record_req<H>(host: *const clap_host, _on: bool)
where
    H: for<'a> HostHandlers<Shared<'a>: HostTransportControlImpl>,
{
    record::<H>(host, TransportRequest::Other)
}
unsafe extern "C" fn other<H>(host: *const clap_host)
where
    H: for<'a> HostHandlers<Shared<'a>: HostTransportControlImpl>,
{
    record::<H>(host, TransportRequest::Other)
}
