//! Small egui pieces the three editors share.

use egui::{pos2, Color32, Rect, Sense, Stroke, Ui, Vec2};

use crate::settings::SessionSettings;
use crate::worker::{WorkerState, WorkerStatus};

/// Theme and fonts the three editors share: egui's dark theme, and Hack
/// (egui's bundled monospace font) as a fallback for the proportional text,
/// which lacks the symbols the editors use (● ▶ ■ →); without it they
/// render as empty boxes. Call from the editor's `build()`.
pub fn setup_context(ctx: &egui::Context) {
    ctx.set_visuals(egui::Visuals::dark());
    let mut fonts = egui::FontDefinitions::default();
    if fonts.font_data.contains_key("Hack") {
        fonts
            .families
            .entry(egui::FontFamily::Proportional)
            .or_default()
            .push("Hack".to_owned());
    }
    ctx.set_fonts(fonts);
}

/// One coloured line: the worker's state and message.
pub fn worker_status(ui: &mut Ui, status: &WorkerStatus) {
    let state = status.state();
    let color = match state {
        WorkerState::Running => Color32::from_rgb(80, 200, 120),
        WorkerState::Starting => Color32::from_rgb(220, 200, 80),
        WorkerState::Stopped => Color32::GRAY,
        WorkerState::Unavailable => Color32::from_rgb(230, 160, 60),
        WorkerState::Failed | WorkerState::Panicked => Color32::from_rgb(230, 80, 80),
    };
    ui.horizontal_wrapped(|ui| {
        ui.colored_label(color, format!("● {}", state.label()));
        let msg = status.message();
        if !msg.is_empty() {
            ui.label(msg);
        }
    });
}

/// A horizontal level meter for a linear peak (−60..0 dBFS).
pub fn level_meter(ui: &mut Ui, label: &str, peak: f32) {
    ui.horizontal(|ui| {
        ui.label(label);
        let (rect, _) = ui.allocate_exact_size(Vec2::new(200.0, 12.0), Sense::hover());
        let db = crate::meter::to_db(peak).clamp(-60.0, 0.0);
        let frac = (db + 60.0) / 60.0;
        let p = ui.painter();
        p.rect_filled(rect, 2.0, Color32::from_gray(40));
        let mut fill = rect;
        fill.set_width(rect.width() * frac);
        let color = if db > -3.0 {
            Color32::from_rgb(230, 80, 80)
        } else {
            Color32::from_rgb(80, 200, 120)
        };
        p.rect_filled(fill, 2.0, color);
        ui.label(format!("{db:6.1} dBFS"));
    });
}

/// A small rolling line graph of `values` (oldest first), scaled to `max`.
pub fn rolling_graph(ui: &mut Ui, values: &[f32], max: f32, color: Color32) {
    let (rect, _) = ui.allocate_exact_size(
        Vec2::new(ui.available_width().min(360.0), 60.0),
        Sense::hover(),
    );
    let p = ui.painter();
    p.rect_filled(rect, 2.0, Color32::from_gray(30));
    if values.len() < 2 || max <= 0.0 {
        return;
    }
    let n = values.len() as f32 - 1.0;
    let pts: Vec<_> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let x = rect.left() + rect.width() * i as f32 / n;
            let y = rect.bottom() - rect.height() * (v / max).clamp(0.0, 1.0);
            pos2(x, y)
        })
        .collect();
    p.add(egui::Shape::line(pts, Stroke::new(1.5, color)));
    let _ = Rect::NOTHING;
}

/// Text fields for the session settings. Edits go to `draft`; the return
/// value is true when the user pressed "Apply" (the caller then stores
/// `draft` and restarts its worker).
pub fn session_settings_form(
    ui: &mut Ui,
    draft: &mut SessionSettings,
    with_destination: bool,
) -> bool {
    egui::Grid::new("session-settings")
        .num_columns(2)
        .show(ui, |ui| {
            ui.label("Session (name or UUID)");
            ui.text_edit_singleline(&mut draft.session);
            ui.end_row();
            ui.label("Key (optional)");
            ui.add(egui::TextEdit::singleline(&mut draft.key).password(true));
            ui.end_row();
            if with_destination {
                ui.label("Destination");
                ui.add(
                    egui::TextEdit::singleline(&mut draft.destination)
                        .hint_text("239.255.77.77:47700 or 10.0.0.2, 10.0.0.3"),
                );
                ui.end_row();
            }
            ui.label("Peer name");
            ui.text_edit_singleline(&mut draft.peer_name);
            ui.end_row();
        });
    let mut apply = false;
    ui.horizontal(|ui| {
        apply = ui.button("Apply").clicked();
        match draft.destination() {
            Ok(d) => ui.weak(format!("→ {} address(es)", d.addrs().len())),
            Err(e) => ui.colored_label(Color32::from_rgb(230, 80, 80), e.to_string()),
        };
    });
    apply
}
