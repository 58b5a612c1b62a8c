//! JAMNet Receive's egui editor: session and stream choice, parameters, and
//! what arrives (latency, jitter, loss, late, JELLIE rebuilt, concealed) with
//! a small rolling graph.

use std::collections::VecDeque;
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

use crate::params::{playout_summary, stream_options, ReceiveParams, StreamChoice};
use crate::ReceiveStats;

/// Points kept in the rolling graph (one per editor frame at ~10 Hz).
const GRAPH_POINTS: usize = 120;

/// Default window size.
pub fn default_state() -> Arc<EguiEditorState> {
    EguiEditorState::from_size(LogicalSize::new(540.0, 700.0), 1.0)
}

/// The editor app.
///
/// Thread-safe: no (GUI thread only). Realtime-safe: no.
pub struct ReceiveEditor {
    params: Arc<ReceiveParams>,
    stats: Arc<ReceiveStats>,
    gui: Option<GuiContext>,
    draft: SessionSettings,
    stream_draft: StreamChoice,
    packet_rate: RateEstimator,
    latency_history: VecDeque<f32>,
}

/// Build the editor.
pub fn create(
    params: Arc<ReceiveParams>,
    stats: Arc<ReceiveStats>,
    state: Arc<EguiEditorState>,
) -> Option<EguiEditor<ReceiveEditor>> {
    let draft = params.session.read().clone();
    let stream_draft = params.stream.read().clone();
    let app = ReceiveEditor {
        draft,
        stream_draft,
        params,
        stats,
        gui: None,
        packet_rate: RateEstimator::default(),
        latency_history: VecDeque::with_capacity(GRAPH_POINTS),
    };
    create_egui_editor(
        state,
        RepaintNotifier::new(),
        EguiNiceSettings::new().with_tile("JAMNet Receive"),
        app,
    )
}

impl ReceiveEditor {
    /// Streams heard in the session (from the worker's report), the choice
    /// applied at once (the worker reads the filter every block period) and
    /// remembered in the plugin's state.
    fn stream_picker(&mut self, ui: &mut egui::Ui) {
        let mut options = match self.stats.report.lock().clone() {
            Some(report) => stream_options(&report.lock()),
            None => vec![(StreamChoice::default(), None)],
        };
        if !options.iter().any(|(o, _)| *o == self.stream_draft) {
            // Remembered but not heard (yet): keep it selectable.
            options.push((self.stream_draft.clone(), None));
        }
        let selected = options
            .iter()
            .find(|(o, _)| *o == self.stream_draft)
            .map_or_else(
                || self.stream_draft.label(None),
                |(o, n)| o.label(n.as_deref()),
            );
        let before = self.stream_draft.clone();
        egui::ComboBox::from_label("Stream")
            .selected_text(selected)
            .width(260.0)
            .show_ui(ui, |ui| {
                for (o, name) in options {
                    let label = o.label(name.as_deref());
                    ui.selectable_value(&mut self.stream_draft, o, label);
                }
            });
        if self.stream_draft != before {
            *self.params.stream.write() = self.stream_draft.clone();
            *self.stats.filter.lock() = self.stream_draft.filter();
        }
    }
}

impl NiceEguiApp for ReceiveEditor {
    fn build(
        &mut self,
        egui_ctx: egui::Context,
        gui: GuiContext,
        _frame: &mut Frame,
    ) -> Result<(), nice_plug_egui::baseview::HandlerError> {
        ui::setup_context(&egui_ctx);
        self.draft = self.params.session.read().clone();
        self.stream_draft = self.params.stream.read().clone();
        self.gui = Some(gui);
        Ok(())
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut Frame) {
        ui.ctx()
            .request_repaint_after(std::time::Duration::from_millis(100));
        ui.heading("JAMNet Receive");
        ui::worker_status(ui, &self.stats.status);
        ui.separator();

        let apply = ui::session_settings_form(ui, &mut self.draft, true);
        if apply {
            *self.params.session.write() = self.draft.clone();
            self.stats.settings_gen.fetch_add(1, Ordering::Release);
        }
        self.stream_picker(ui);
        ui.separator();

        if let Some(gui) = &self.gui {
            let setter = gui.param_setter();
            egui::Grid::new("receive-params")
                .num_columns(2)
                .show(ui, |ui| {
                    ui.label("Jitter mode");
                    ui.add(ParamSlider::for_param(&self.params.jitter_mode, &setter));
                    ui.end_row();
                    ui.label("Jitter buffer");
                    ui.add(ParamSlider::for_param(&self.params.jitter_ms, &setter));
                    ui.end_row();
                    ui.label("Low latency");
                    ui.add(ParamSlider::for_param(&self.params.low_latency, &setter));
                    ui.end_row();
                    ui.label("Concealment");
                    ui.add(ParamSlider::for_param(&self.params.concealment, &setter));
                    ui.end_row();
                    ui.label("Output gain");
                    ui.add(ParamSlider::for_param(&self.params.gain, &setter));
                    ui.end_row();
                    ui.label("MIDI out");
                    ui.add(ParamSlider::for_param(&self.params.midi_out, &setter));
                    ui.end_row();
                });
        }
        ui.separator();

        let s = &self.stats;
        let link = s.link.lock().clone().map(|l| l.snapshot());
        let Some(l) = link else {
            ui.label("not receiving (plugin not activated, or the worker failed: see above)");
            return;
        };
        let pps = self.packet_rate.update(l.frames_received);
        // Latency the receiver adds after a block's arrival: playout buffer
        // plus the handle's queued blocks; plus the measured one-way delay.
        let latency = (l.playout_delay_us + l.one_way_delay_us) as f32 / 1000.0;
        if self.latency_history.len() == GRAPH_POINTS {
            self.latency_history.pop_front();
        }
        self.latency_history.push_back(latency);
        egui::Grid::new("receive-stats")
            .num_columns(4)
            .show(ui, |ui| {
                ui.label("Worker");
                ui.label(format!("{:?}", l.worker_state));
                ui.label("Peers");
                ui.label(l.peers.to_string());
                ui.end_row();
                ui.label("Latency");
                ui.label(format!("{latency:.2} ms"));
                ui.label("Jitter");
                ui.label(format!("{:.2} ms", l.jitter_us as f32 / 1000.0));
                ui.end_row();
                ui.label("Lost");
                ui.label(l.audio_blocks_lost.to_string());
                ui.label("Late");
                ui.label(l.audio_blocks_late.to_string());
                ui.end_row();
                ui.label("JELLIE rebuilt");
                ui.label(l.audio_blocks_rebuilt.to_string());
                ui.label("Concealed");
                ui.label(l.audio_blocks_concealed.to_string());
                ui.end_row();
                ui.label("Packets/s");
                ui.label(format!("{pps:.0}"));
                ui.label("MIDI out");
                ui.label(s.midi_out.total().to_string());
                ui.end_row();
                ui.label("Underrun frames");
                ui.label(l.audio_frames_underrun.to_string());
                ui.label("Rejected");
                ui.label(l.frames_rejected.to_string());
                ui.end_row();
                ui.label("Dropout repaid");
                ui.label(l.audio_frames_repaid.to_string());
                ui.label("Priority");
                ui.label(if l.worker_realtime {
                    "real-time"
                } else {
                    "normal"
                });
                ui.end_row();
            });
        if let Some(report) = self.stats.report.lock().clone() {
            let host_rate = self.stats.sample_rate.load(Ordering::Relaxed);
            let line = playout_summary(&report.lock(), host_rate, self.params.low_latency.value());
            ui.label(line);
        }
        if let Some(e) = l.error {
            ui.colored_label(egui::Color32::from_rgb(230, 80, 80), e);
        }
        ui.label("Latency (ms), last 12 s");
        let (hist, _) = self.latency_history.as_slices();
        let mut points: Vec<f32> = hist.to_vec();
        points.extend(self.latency_history.as_slices().1);
        let max = points.iter().copied().fold(1.0f32, f32::max);
        ui::rolling_graph(
            ui,
            &points,
            max * 1.2,
            egui::Color32::from_rgb(120, 170, 255),
        );
        ui::level_meter(ui, "L", s.peak_l.take());
        ui::level_meter(ui, "R", s.peak_r.take());
    }
}
