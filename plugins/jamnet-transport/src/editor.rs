//! JAMNet Transport's egui editor: mode, host and session transport, offset,
//! peers, master and sync quality.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use jamnet_plugin_kit::meter::RateEstimator;
use jamnet_plugin_kit::ui;
use jamnet_plugin_kit::SessionSettings;
use nice_plug::context::gui::GuiContext;
use nice_plug::editor::dpi::LogicalSize;
use nice_plug_egui::widgets::ParamSlider;
use nice_plug_egui::{
    create_egui_editor, EguiEditor, EguiEditorState, EguiNiceSettings, Frame, NiceEguiApp,
    RepaintNotifier,
};

use crate::params::{Mode, TransportParams};
use crate::TransportStats;

/// A long explanatory line in a grid cell, wrapped to fit the window.
fn note(ui: &mut egui::Ui, text: &str) {
    ui.vertical(|ui| {
        ui.set_max_width(340.0);
        ui.add(egui::Label::new(text).wrap());
    });
}

/// Default window size.
pub fn default_state() -> Arc<EguiEditorState> {
    EguiEditorState::from_size(LogicalSize::new(520.0, 580.0), 1.0)
}

/// The editor app.
///
/// Thread-safe: no (GUI thread only). Realtime-safe: no.
pub struct TransportEditor {
    params: Arc<TransportParams>,
    stats: Arc<TransportStats>,
    gui: Option<GuiContext>,
    draft: SessionSettings,
    frame_rate: RateEstimator,
}

/// Build the editor.
pub fn create(
    params: Arc<TransportParams>,
    stats: Arc<TransportStats>,
    state: Arc<EguiEditorState>,
) -> Option<EguiEditor<TransportEditor>> {
    let draft = params.session.read().clone();
    let app = TransportEditor {
        draft,
        params,
        stats,
        gui: None,
        frame_rate: RateEstimator::default(),
    };
    create_egui_editor(
        state,
        RepaintNotifier::new(),
        EguiNiceSettings::new().with_tile("JAMNet Transport"),
        app,
    )
}

impl NiceEguiApp for TransportEditor {
    fn build(
        &mut self,
        egui_ctx: egui::Context,
        gui: GuiContext,
        _frame: &mut Frame,
    ) -> Result<(), nice_plug_egui::baseview::HandlerError> {
        ui::setup_context(&egui_ctx);
        self.draft = self.params.session.read().clone();
        self.gui = Some(gui);
        Ok(())
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut Frame) {
        ui.ctx()
            .request_repaint_after(std::time::Duration::from_millis(100));
        ui.heading("JAMNet Transport");
        ui::worker_status(ui, &self.stats.status);
        ui.separator();
        if ui::session_settings_form(ui, &mut self.draft, true) {
            *self.params.session.write() = self.draft.clone();
            self.stats.settings_gen.fetch_add(1, Ordering::Release);
        }
        ui.separator();
        if let Some(gui) = &self.gui {
            let setter = gui.param_setter();
            egui::Grid::new("transport-params")
                .num_columns(2)
                .show(ui, |ui| {
                    ui.label("Mode");
                    ui.add(ParamSlider::for_param(&self.params.mode, &setter));
                    ui.end_row();
                    ui.label("Announce every");
                    ui.add(ParamSlider::for_param(&self.params.announce_ms, &setter));
                    ui.end_row();
                    ui.label("MIDI Clock out");
                    ui.add(ParamSlider::for_param(&self.params.midi_clock, &setter));
                    ui.end_row();
                    ui.label("Song Position out");
                    ui.add(ParamSlider::for_param(&self.params.spp, &setter));
                    ui.end_row();
                    ui.label("MTC out");
                    ui.add(ParamSlider::for_param(&self.params.mtc, &setter));
                    ui.end_row();
                    ui.label("MTC rate");
                    ui.add(ParamSlider::for_param(&self.params.mtc_rate, &setter));
                    ui.end_row();
                    ui.label("Host transport control");
                    ui.add(ParamSlider::for_param(&self.params.host_control, &setter));
                    ui.end_row();
                    ui.label("");
                    let s = &self.stats;
                    let text = match s.host_control.load(Ordering::Relaxed) {
                        1 => {
                            let reaction = s.host_reaction_ms.get();
                            if reaction >= 0.0 {
                                format!(
                                    "host offers CLAP transport control: {} requests, host reacts in {reaction:.1} ms",
                                    s.host_requests.load(Ordering::Relaxed)
                                )
                            } else {
                                format!(
                                    "host offers CLAP transport control: {} requests",
                                    s.host_requests.load(Ordering::Relaxed)
                                )
                            }
                        }
                        2 => "this CLAP host offers no transport control".to_string(),
                        3 => "CLAP only (VST3 has no transport control)".to_string(),
                        _ => "host not asked yet".to_string(),
                    };
                    note(ui, &text);
                    ui.end_row();
                });
        }
        ui.separator();
        let s = &self.stats;
        let fps = self.frame_rate.update(s.frames_sent.total());
        let play = |p: bool| if p { "▶ playing" } else { "■ stopped" };
        egui::Grid::new("transport-stats")
            .num_columns(2)
            .show(ui, |ui| {
                ui.label("Host");
                ui.label(format!(
                    "{}  {:.2} BPM  {:.3} s",
                    play(s.host_playing.load(Ordering::Relaxed)),
                    s.host_bpm.get(),
                    s.host_pos_s.get()
                ));
                ui.end_row();
                if self.params.mode.value() == Mode::Lead {
                    ui.label("Published");
                    ui.label(format!(
                        "{} frames ({fps:.1}/s), {} errors, {} dropped",
                        s.frames_sent.total(),
                        s.send_errors.load(Ordering::Relaxed),
                        s.ring_full.load(Ordering::Relaxed)
                    ));
                    ui.end_row();
                } else {
                    ui.label("Session");
                    if s.session_known.load(Ordering::Relaxed) {
                        ui.label(format!(
                            "{}  {:.2} BPM  {:.3} s",
                            play(s.session_playing.load(Ordering::Relaxed)),
                            s.session_bpm.get(),
                            s.session_pos_s.get()
                        ));
                    } else {
                        ui.label("nothing received yet");
                    }
                    ui.end_row();
                    ui.label("Host offset");
                    ui.label(format!(
                        "{:+.2} ms ({:+.0} samples)",
                        s.offset_ms.get(),
                        s.offset_samples.get()
                    ));
                    ui.end_row();
                    ui.label("Received");
                    ui.label(format!(
                        "{} transport frames, {} rejected, {} ignored, {} refused",
                        s.frames_received.load(Ordering::Relaxed),
                        s.rejects.total_rejected(),
                        s.frames_ignored.load(Ordering::Relaxed),
                        s.commands_refused.load(Ordering::Relaxed)
                    ));
                    ui.end_row();
                    ui.label("Applied");
                    ui.label(format!(
                        "{} commands, {} late",
                        s.commands_applied.load(Ordering::Relaxed),
                        s.commands_late.load(Ordering::Relaxed)
                    ));
                    ui.end_row();
                    ui.label("MIDI out");
                    ui.label(format!(
                        "{} messages ({} clocks), {} refused by host",
                        s.midi_sent.load(Ordering::Relaxed),
                        s.midi_clocks.load(Ordering::Relaxed),
                        s.midi_dropped.load(Ordering::Relaxed)
                    ));
                    ui.end_row();
                    ui.label("");
                    note(
                        ui,
                        if s.host_control.load(Ordering::Relaxed) == 3 {
                            "VST3 has no MIDI Clock event: Clock/SPP/MTC go out as \
                             raw bytes in SysEx events, which many hosts drop"
                        } else {
                            "CLAP: Clock/SPP/MTC go out as MIDI events (MTC full \
                             frames as SysEx)"
                        },
                    );
                    ui.end_row();
                }
                ui.label("Peers");
                ui.label(s.peers.load(Ordering::Relaxed).to_string());
                ui.end_row();
                let own = s.source_id.load(Ordering::Relaxed);
                let peer = |m: u32| match m {
                    0 => "unknown".to_owned(),
                    m if m == own => format!("{m:08x} (this instance)"),
                    m => format!("{m:08x}"),
                };
                ui.label("Transport master");
                ui.label(peer(s.master.load(Ordering::Relaxed)));
                ui.end_row();
                ui.label("Clock master");
                ui.label(format!(
                    "{}, {} clock peers",
                    peer(s.clock_master.load(Ordering::Relaxed)),
                    s.clock_peers.load(Ordering::Relaxed)
                ));
                ui.end_row();
                ui.label("Sync quality");
                let q = s.sync_quality.get();
                ui.label(if q < 0.0 {
                    "no clock peers (session time = this machine's clock)".to_owned()
                } else {
                    format!(
                        "{:.0} %, session − local {:+.3} ms, {} frames held unsynced",
                        q * 100.0,
                        s.session_offset_ms.get(),
                        s.unsynced.load(Ordering::Relaxed)
                    )
                });
                ui.end_row();
            });
    }
}
