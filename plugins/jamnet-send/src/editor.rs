//! JAMNet Send's egui editor: session settings, parameters, and what the
//! network is doing (listeners, packets/s, errors, input level).

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

use crate::params::SendParams;
use crate::SendStats;

/// Default window size.
pub fn default_state() -> Arc<EguiEditorState> {
    EguiEditorState::from_size(LogicalSize::new(520.0, 510.0), 1.0)
}

/// The editor app.
///
/// Thread-safe: no (GUI thread only). Realtime-safe: no.
pub struct SendEditor {
    params: Arc<SendParams>,
    stats: Arc<SendStats>,
    gui: Option<GuiContext>,
    draft: SessionSettings,
    stream_draft: String,
    packet_rate: RateEstimator,
}

/// Build the editor.
pub fn create(
    params: Arc<SendParams>,
    stats: Arc<SendStats>,
    state: Arc<EguiEditorState>,
) -> Option<EguiEditor<SendEditor>> {
    let draft = params.session.read().clone();
    let stream_draft = params.stream_name.read().clone();
    let app = SendEditor {
        draft,
        stream_draft,
        params,
        stats,
        gui: None,
        packet_rate: RateEstimator::default(),
    };
    create_egui_editor(
        state,
        RepaintNotifier::new(),
        EguiNiceSettings::new().with_tile("JAMNet Send"),
        app,
    )
}

impl NiceEguiApp for SendEditor {
    fn build(
        &mut self,
        egui_ctx: egui::Context,
        gui: GuiContext,
        _frame: &mut Frame,
    ) -> Result<(), nice_plug_egui::baseview::HandlerError> {
        ui::setup_context(&egui_ctx);
        // The host may have restored a saved state since the editor was made.
        self.draft = self.params.session.read().clone();
        self.stream_draft = self.params.stream_name.read().clone();
        self.gui = Some(gui);
        Ok(())
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut Frame) {
        ui.ctx()
            .request_repaint_after(std::time::Duration::from_millis(100));
        ui.heading("JAMNet Send");
        ui::worker_status(ui, &self.stats.status);
        ui.separator();

        let mut apply = ui::session_settings_form(ui, &mut self.draft, true);
        ui.horizontal(|ui| {
            ui.label("Stream name");
            apply |= ui.text_edit_singleline(&mut self.stream_draft).lost_focus()
                && ui.input(|i| i.key_pressed(egui::Key::Enter));
        });
        if apply {
            *self.params.session.write() = self.draft.clone();
            *self.params.stream_name.write() = self.stream_draft.clone();
            self.stats.settings_gen.fetch_add(1, Ordering::Release);
        }
        ui.separator();

        if let Some(gui) = &self.gui {
            let setter = gui.param_setter();
            egui::Grid::new("send-params")
                .num_columns(2)
                .show(ui, |ui| {
                    ui.label("Send");
                    ui.add(ParamSlider::for_param(&self.params.enabled, &setter));
                    ui.end_row();
                    ui.label("Format");
                    ui.add(ParamSlider::for_param(&self.params.format, &setter));
                    ui.end_row();
                    ui.label("JELLIE (mono)");
                    ui.add(ParamSlider::for_param(&self.params.jellie, &setter));
                    ui.end_row();
                    ui.label("Send MIDI");
                    ui.add(ParamSlider::for_param(&self.params.midi, &setter));
                    ui.end_row();
                    ui.label("MIDI burst");
                    ui.add(ParamSlider::for_param(&self.params.burst, &setter));
                    ui.end_row();
                });
        }
        ui.separator();

        let link = self.stats.link.lock().clone().map(|l| l.snapshot());
        let Some(l) = link else {
            ui.label("not streaming (plugin not activated, or the worker failed: see above)");
            ui::level_meter(ui, "L", self.stats.peak_l.take());
            ui::level_meter(ui, "R", self.stats.peak_r.take());
            return;
        };
        let pps = self.packet_rate.update(l.frames_sent);
        egui::Grid::new("send-stats").num_columns(2).show(ui, |ui| {
            ui.label("Worker");
            ui.label(format!(
                "{:?}{}",
                l.worker_state,
                l.error.map(|e| format!(": {e}")).unwrap_or_default()
            ));
            ui.end_row();
            ui.label("Peers in session");
            ui.label(l.peers.to_string());
            ui.end_row();
            ui.label("Packets/s");
            ui.label(format!("{pps:.0}  ({} sent)", l.frames_sent));
            ui.end_row();
            ui.label("Send errors");
            ui.label(format!(
                "{} frames dropped (worker late), {} MIDI rejected",
                l.audio_frames_overflow, l.midi_rejected
            ));
            ui.end_row();
            ui.label("MIDI events in / sent");
            ui.label(format!(
                "{} / {}",
                self.stats.midi_in.total(),
                l.midi_pushed
            ));
            ui.end_row();
        });
        ui::level_meter(ui, "L", self.stats.peak_l.take());
        ui::level_meter(ui, "R", self.stats.peak_r.take());
    }
}
