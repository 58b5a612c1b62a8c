//! `jamnet-clap-host gui`: open each plugin's editor the way a Linux CLAP
//! host does (the `gui` extension, X11 API, embedded in a window this host
//! creates), let it render while the plugin processes in real time, then
//! screenshot it and check that it drew something.
//!
//! Run under an X server (CI: Xvfb with Mesa's software GL). The parent
//! window is filled with a colour no editor uses (magenta), so pixels the
//! editor did not paint are countable. Before the editor is attached, the
//! same checks run on the bare parent window and must fail: that proves they
//! can.

use std::ffi::c_ulong;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use clack_extensions::gui::{GuiApiType, GuiConfiguration, GuiSize, PluginGui, Window};
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{ConnectionExt as _, CreateWindowAux, ImageFormat, WindowClass};
use x11rb::xcb_ffi::XCBConnection;

use super::{activate, instantiate, load_entry, pump_main_thread, transport_at, Io, BLOCK};
use super::{Loaded, SAMPLE_RATE};

/// The parent window's fill: a colour none of the editors draw.
const UNPAINTED: [u8; 3] = [255, 0, 255];
/// Give up waiting for a rendered frame after this long.
const RENDER_TIMEOUT: Duration = Duration::from_secs(6);
/// Editors opened before giving up. Under Xvfb, baseview's X11 window
/// sometimes never draws its first frame (mapped, viewable, never painted;
/// it paces frames on Present CompleteNotify events and seems to miss the
/// first one: once in 48 openings at the shipped sizes, 4 in 5 at 800x900).
/// Closing and reopening the editor, as a user would, recovers; every
/// reopen is reported.
const ATTEMPTS: u32 = 3;

/// Thresholds a rendered editor must meet (see [`ShotStats::verdict`]).
const MAX_UNPAINTED: f64 = 0.005;
const MIN_COLOURS: usize = 40;
const MAX_DOMINANT: f64 = 0.97;
const MIN_TEXT_LINES: usize = 8;
/// Width of the bottom and right bands that must be free of text.
const EDGE: u32 = 4;
/// "Light" (text on egui's dark theme; its widget fills are darker).
const LIGHT: f64 = 120.0;

/// An RGB capture of one window.
struct Shot {
    width: u32,
    height: u32,
    rgb: Vec<u8>,
}

/// What [`Shot::stats`] measures.
#[derive(Debug)]
struct ShotStats {
    /// Fraction of pixels still in the parent window's colour.
    unpainted: f64,
    /// Distinct RGB colours.
    colours: usize,
    /// Fraction of the most common colour (the panel background).
    dominant: f64,
    /// Bands of rows holding light pixels (text on the dark theme),
    /// separated by rows without: roughly the number of text lines.
    text_lines: usize,
    /// Light pixels in the bottom and right [`EDGE`]-pixel bands: content
    /// running into the window's edge, i.e. cut off.
    edge_ink: usize,
    /// The lowest row holding a light pixel (how tall the content is).
    last_ink_row: u32,
}

impl ShotStats {
    /// `Ok` when the capture looks like a rendered editor and nothing is
    /// cut off at its edges.
    fn verdict(&self) -> Result<()> {
        self.rendered()?;
        ensure!(
            self.edge_ink == 0,
            "{} light pixels in the bottom/right {EDGE}-pixel edge (lowest at row {}): \
             content is cut off, the editor's default size is too small",
            self.edge_ink,
            self.last_ink_row
        );
        Ok(())
    }

    /// `Ok` when the capture looks like a rendered editor.
    fn rendered(&self) -> Result<()> {
        ensure!(
            self.unpainted <= MAX_UNPAINTED,
            "{:.1}% of the window is unpainted (max {:.1}%)",
            self.unpainted * 100.0,
            MAX_UNPAINTED * 100.0
        );
        ensure!(
            self.colours >= MIN_COLOURS,
            "{} distinct colours (min {MIN_COLOURS})",
            self.colours
        );
        ensure!(
            self.dominant <= MAX_DOMINANT,
            "one colour covers {:.1}% (max {:.0}%)",
            self.dominant * 100.0,
            MAX_DOMINANT * 100.0
        );
        ensure!(
            self.text_lines >= MIN_TEXT_LINES,
            "{} text lines (min {MIN_TEXT_LINES})",
            self.text_lines
        );
        Ok(())
    }
}

impl Shot {
    fn stats(&self) -> ShotStats {
        let n = (self.width * self.height) as usize;
        let mut counts: std::collections::HashMap<[u8; 3], usize> = Default::default();
        for px in self.rgb.chunks_exact(3) {
            *counts.entry([px[0], px[1], px[2]]).or_default() += 1;
        }
        let unpainted = counts.get(&UNPAINTED).copied().unwrap_or(0);
        let dominant = counts.values().copied().max().unwrap_or(0);
        let row_len = self.width as usize * 3;
        let mut text_lines = 0;
        let mut in_line = false;
        let mut edge_ink = 0;
        let mut last_ink_row = 0;
        for (y, row) in self.rgb.chunks_exact(row_len).enumerate() {
            let mut light = 0;
            for (x, p) in row.chunks_exact(3).enumerate() {
                if p != UNPAINTED && luma(p) >= LIGHT {
                    light += 1;
                    last_ink_row = y as u32;
                    if x as u32 >= self.width - EDGE || y as u32 >= self.height - EDGE {
                        edge_ink += 1;
                    }
                }
            }
            let has = light >= 2;
            if has && !in_line {
                text_lines += 1;
            }
            in_line = has;
        }
        ShotStats {
            unpainted: unpainted as f64 / n as f64,
            colours: counts.len(),
            dominant: dominant as f64 / n as f64,
            text_lines,
            edge_ink,
            last_ink_row,
        }
    }

    fn write_png(&self, path: &Path) -> Result<()> {
        let file =
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let mut enc = png::Encoder::new(BufWriter::new(file), self.width, self.height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_compression(png::Compression::Best);
        let mut w = enc.write_header()?;
        w.write_image_data(&self.rgb)?;
        w.finish()?;
        Ok(())
    }
}

fn luma(p: &[u8]) -> f64 {
    0.299 * p[0] as f64 + 0.587 * p[1] as f64 + 0.114 * p[2] as f64
}

/// The X connection, the host's parent window and how to read its pixels.
struct Display {
    conn: XCBConnection,
    root: u32,
    shifts: [u32; 3],
    masks: [u32; 3],
}

impl Display {
    fn open() -> Result<Self> {
        ensure!(
            std::env::var_os("DISPLAY").is_some(),
            "gui needs an X server: DISPLAY is not set (run under Xvfb)"
        );
        let (conn, screen_num) =
            XCBConnection::connect(None).context("connecting to the X server")?;
        let setup = conn.setup();
        let screen = &setup.roots[screen_num];
        let visual = screen
            .allowed_depths
            .iter()
            .flat_map(|d| d.visuals.iter())
            .find(|v| v.visual_id == screen.root_visual)
            .ok_or_else(|| anyhow!("root visual not found"))?;
        let bpp = setup
            .pixmap_formats
            .iter()
            .find(|f| f.depth == screen.root_depth)
            .map(|f| f.bits_per_pixel)
            .unwrap_or(0);
        ensure!(
            bpp == 32 && setup.image_byte_order == x11rb::protocol::xproto::ImageOrder::LSB_FIRST,
            "only 32-bit little-endian pixels are handled (root depth {}, {bpp} bpp); run Xvfb with -screen 0 WxHx24",
            screen.root_depth
        );
        let masks = [visual.red_mask, visual.green_mask, visual.blue_mask];
        let shifts = masks.map(|m| m.trailing_zeros());
        let root = screen.root;
        Ok(Self {
            conn,
            root,
            shifts,
            masks,
        })
    }

    fn pixel(&self, rgb: [u8; 3]) -> u32 {
        (0..3)
            .map(|i| ((rgb[i] as u32) << self.shifts[i]) & self.masks[i])
            .sum()
    }

    /// A top-level window at (0, 0) filled with [`UNPAINTED`].
    fn parent_window(&self, size: GuiSize) -> Result<u32> {
        let win = self.conn.generate_id()?;
        self.conn.create_window(
            x11rb::COPY_DEPTH_FROM_PARENT,
            win,
            self.root,
            0,
            0,
            size.width as u16,
            size.height as u16,
            0,
            WindowClass::INPUT_OUTPUT,
            x11rb::COPY_FROM_PARENT,
            &CreateWindowAux::new().background_pixel(self.pixel(UNPAINTED)),
        )?;
        self.conn.map_window(win)?;
        self.conn.flush()?;
        Ok(win)
    }

    /// What is on screen inside `win` (read from the root window, as `xwd
    /// -root` does, so the editor's GL child window is included whatever its
    /// visual).
    fn capture(&self, win: u32, size: GuiSize) -> Result<Shot> {
        let at = self
            .conn
            .translate_coordinates(win, self.root, 0, 0)?
            .reply()?;
        let img = self
            .conn
            .get_image(
                ImageFormat::Z_PIXMAP,
                self.root,
                at.dst_x,
                at.dst_y,
                size.width as u16,
                size.height as u16,
                !0,
            )?
            .reply()?;
        let n = (size.width * size.height) as usize;
        ensure!(
            img.data.len() == n * 4,
            "GetImage returned {} bytes for {}x{}",
            img.data.len(),
            size.width,
            size.height
        );
        let mut rgb = Vec::with_capacity(n * 3);
        for px in img.data.chunks_exact(4) {
            let v = u32::from_le_bytes([px[0], px[1], px[2], px[3]]);
            for i in 0..3 {
                let m = self.masks[i] >> self.shifts[i];
                let c = (v >> self.shifts[i]) & m;
                rgb.push((c * 255 / m.max(1)) as u8);
            }
        }
        Ok(Shot {
            width: size.width,
            height: size.height,
            rgb,
        })
    }
}

/// `bundles/JAMNet Send.clap` -> `jamnet-send`.
fn slug(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().to_lowercase().replace(' ', "-"))
        .unwrap_or_else(|| "editor".into())
}

/// Processes blocks in real time (playing transport at the harness tempo)
/// while the caller waits, so the editor shows a running plugin.
struct Pacer {
    io: Io,
    start: Instant,
    blocks: u64,
}

impl Pacer {
    fn catch_up(
        &mut self,
        p: &mut Loaded,
        proc: &mut clack_host::prelude::StartedPluginAudioProcessor<super::Host>,
    ) -> Result<()> {
        let due = (self.start.elapsed().as_secs_f64() * SAMPLE_RATE / BLOCK as f64) as u64;
        // A loaded machine may fall behind; skip rather than burst forever.
        if due > self.blocks + 200 {
            self.blocks = due - 200;
        }
        while self.blocks < due {
            let sample = self.blocks * BLOCK as u64;
            self.io.fill_input(sample);
            self.io.run(proc, sample, &transport_at(sample, true))?;
            self.blocks += 1;
        }
        pump_main_thread(p);
        Ok(())
    }

    /// Keep processing for `d`.
    fn run_for(
        &mut self,
        p: &mut Loaded,
        proc: &mut clack_host::prelude::StartedPluginAudioProcessor<super::Host>,
        d: Duration,
    ) -> Result<()> {
        let until = Instant::now() + d;
        while Instant::now() < until {
            self.catch_up(p, proc)?;
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }
}

/// Open, render, check and save one editor.
fn one(display: &Display, path: &Path, out_dir: &Path, settle: Duration) -> Result<PathBuf> {
    let entry = load_entry(path)?;
    let mut p = instantiate(&entry)?;
    let gui: PluginGui = p
        .instance
        .access_shared_handler(|s| *s.gui.get().unwrap_or(&None))
        .ok_or_else(|| anyhow!("{}: no gui extension", p.name))?;
    let config = GuiConfiguration {
        api_type: GuiApiType::X11,
        is_floating: false,
    };
    let mut proc = activate(&mut p)?;
    let mut pacer = Pacer {
        io: Io::new(p.inputs, p.outputs),
        start: Instant::now(),
        blocks: 0,
    };
    // Let the worker start before the editor opens (as in a DAW, where
    // the plugin is usually running before anyone opens its window).
    pacer.run_for(&mut p, &mut proc, Duration::from_millis(300))?;

    let t_open = Instant::now();
    let h = p.instance.plugin_handle();
    ensure!(
        gui.is_api_supported(&h, config),
        "{}: embedded X11 editor not supported",
        p.name
    );
    gui.create(&h, config)
        .map_err(|e| anyhow!("{}: gui.create failed: {e:?}", p.name))?;
    // Hosts pass the display scale; Xvfb has no scaling.
    let _ = gui.set_scale(&h, 1.0);
    let size = gui
        .get_size(&h)
        .ok_or_else(|| anyhow!("{}: gui.get_size failed", p.name))?;
    let win = display.parent_window(size)?;

    // Negative control: the bare parent window must fail the checks.
    let bare = display.capture(win, size)?.stats();
    ensure!(
        bare.verdict().is_err(),
        "{}: the empty parent window passed the render checks ({bare:?}): the checks prove nothing",
        p.name
    );

    let mut attempt = 1;
    loop {
        let h = p.instance.plugin_handle();
        // SAFETY: `win` is a live X11 window of this connection; it outlives
        // the editor (destroyed below, after gui.destroy).
        unsafe { gui.set_parent(&h, Window::from_x11_handle(win as c_ulong)) }
            .map_err(|e| anyhow!("{}: gui.set_parent failed: {e:?}", p.name))?;
        gui.show(&h)
            .map_err(|e| anyhow!("{}: gui.show failed: {e:?}", p.name))?;
        let t_show = Instant::now();
        // Wait for a frame that passes the render checks.
        let last = loop {
            pacer.run_for(&mut p, &mut proc, Duration::from_millis(100))?;
            let shot = display.capture(win, size)?;
            let s = shot.stats();
            if s.rendered().is_ok() {
                break None;
            }
            if t_show.elapsed() > RENDER_TIMEOUT {
                break Some((shot, s));
            }
        };
        let Some((shot, s)) = last else { break };
        if attempt == ATTEMPTS {
            let failed = out_dir.join(format!("{}-failed.png", slug(path)));
            shot.write_png(&failed)?;
            bail!(
                "{}: no rendered frame in {ATTEMPTS} openings of {:?} each; last capture ({}): {s:?}",
                p.name,
                RENDER_TIMEOUT,
                failed.display()
            );
        }
        println!(
            "note {}: editor painted nothing in {:?} (opening {attempt}); closing and reopening it",
            p.name, RENDER_TIMEOUT
        );
        let h = p.instance.plugin_handle();
        let _ = gui.hide(&h);
        gui.destroy(&h);
        pump_main_thread(&mut p);
        let h = p.instance.plugin_handle();
        gui.create(&h, config)
            .map_err(|e| anyhow!("{}: gui.create failed: {e:?}", p.name))?;
        let _ = gui.set_scale(&h, 1.0);
        attempt += 1;
    }
    let first_frame = t_open.elapsed();
    // The editor's own X window (the one child of ours) has the size the
    // plugin reported.
    let children = display.conn.query_tree(win)?.reply()?.children;
    ensure!(
        children.len() == 1,
        "{}: expected the editor as the parent window's one child, found {}",
        p.name,
        children.len()
    );
    let g = display.conn.get_geometry(children[0])?.reply()?;
    ensure!(
        (g.width as u32, g.height as u32) == (size.width, size.height),
        "{}: editor window is {}x{}, the plugin reported {}x{}",
        p.name,
        g.width,
        g.height,
        size.width,
        size.height
    );
    pacer.run_for(&mut p, &mut proc, settle)?;
    let shot = display.capture(win, size)?;
    let stats = shot.stats();
    let out = out_dir.join(format!("{}.png", slug(path)));
    shot.write_png(&out)?;
    stats
        .verdict()
        .with_context(|| format!("{}: settled frame {stats:?} ({})", p.name, out.display()))?;
    println!(
        "ok   {}: {}x{} editor, first good frame after {:.2} s (opening {attempt}); {:.2}% unpainted, {} colours, \
         background {:.1}%, {} text lines, lowest text row {} -> {}",
        p.name,
        size.width,
        size.height,
        first_frame.as_secs_f64(),
        stats.unpainted * 100.0,
        stats.colours,
        stats.dominant * 100.0,
        stats.text_lines,
        stats.last_ink_row,
        out.display()
    );

    let h = p.instance.plugin_handle();
    let _ = gui.hide(&h);
    gui.destroy(&h);
    pump_main_thread(&mut p);
    display.conn.destroy_window(win)?;
    display.conn.flush()?;
    p.instance.deactivate(proc.stop_processing());
    Ok(out)
}

/// `gui [--out DIR] [--settle-ms N] BUNDLE.clap...`
pub fn gui(paths: &[PathBuf], out_dir: &Path, settle: Duration) -> Result<()> {
    ensure!(!paths.is_empty(), "gui: no bundles given");
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let display = Display::open()?;
    for path in paths {
        one(&display, path, out_dir, settle)?;
    }
    Ok(())
}
