//! PNBTR on the GPU: `shaders/pnbtr.wgsl` through wgpu, one workgroup per
//! stream (channel), many streams per dispatch. [`super::core::predict`] is
//! its CPU twin (tested equal within 1e-4 relative to the output's peak).
//!
//! The GPU round trip (upload, dispatch, map, read back) blocks the caller for
//! a fraction of a millisecond on a real GPU and several on lavapipe, so this
//! belongs on a worker that batches every stream's gap starts into one
//! [`GpuPnbtr::predict_batch`], not on the audio thread.

use super::concealer::{Predictor, MAX_GAP};
use super::core::{PnbtrModel, HISTORY, N_WEIGHTS};
use std::sync::mpsc;

/// The kernel's WGSL source.
pub const SHADER_SOURCE: &str = include_str!("../../../shaders/pnbtr.wgsl");

/// Why the GPU path failed.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// No GPU adapter (install a Vulkan driver; lavapipe works).
    #[error("no GPU adapter found: {0}")]
    NoAdapter(String),
    /// The adapter refused a device.
    #[error("GPU device request failed: {0}")]
    Device(String),
    /// The adapter is too small for the kernel (workgroup memory, buffer size).
    #[error("GPU adapter limits too small: {0}")]
    Limits(String),
    /// A batch larger than the engine was built for.
    #[error(
        "batch of {streams} streams x {len} samples exceeds capacity {max_streams} x {max_len}"
    )]
    TooLarge {
        /// Streams asked for.
        streams: usize,
        /// Samples per stream asked for.
        len: usize,
        /// Capacity in streams.
        max_streams: usize,
        /// Capacity in samples.
        max_len: usize,
    },
    /// Input slice lengths do not match `streams * HISTORY`/`streams * len`.
    #[error("input/output buffer length mismatch")]
    BadInput,
    /// Reading the results back failed (device lost, timeout).
    #[error("GPU readback failed: {0}")]
    Readback(String),
}

/// Batched PNBTR predictor on a wgpu device.
///
/// Thread-safe: no (`Send`; one owner). Realtime-safe: no (blocks on the GPU).
pub struct GpuPnbtr {
    device: wgpu::Device,
    queue: wgpu::Queue,
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    hist_buf: wgpu::Buffer,
    out_buf: wgpu::Buffer,
    read_buf: wgpu::Buffer,
    params_buf: wgpu::Buffer,
    max_streams: usize,
    max_len: usize,
    adapter_name: String,
}

/// Adapter limits the kernel needs beyond the defaults it is built for.
fn required_limits(adapter: &wgpu::Adapter, bytes: u64) -> Result<wgpu::Limits, GpuError> {
    let have = adapter.limits();
    let mut need = wgpu::Limits::default();
    need.max_storage_buffer_binding_size = bytes.max(need.max_storage_buffer_binding_size);
    need.max_buffer_size = bytes.max(need.max_buffer_size);
    if have.max_storage_buffer_binding_size < bytes
        || have.max_compute_workgroup_storage_size < need.max_compute_workgroup_storage_size
        || have.max_compute_workgroups_per_dimension < need.max_compute_workgroups_per_dimension
    {
        return Err(GpuError::Limits(format!(
            "need {bytes} B storage bindings and 16 KiB workgroup memory, adapter has {} B and {} B",
            have.max_storage_buffer_binding_size, have.max_compute_workgroup_storage_size
        )));
    }
    Ok(need)
}

impl GpuPnbtr {
    /// Creates the device and buffers for up to `max_streams` streams of up
    /// to `max_len` output samples each.
    pub fn new(model: PnbtrModel, max_streams: usize, max_len: usize) -> Result<Self, GpuError> {
        let max_streams = max_streams.clamp(1, 65535);
        let max_len = max_len.max(1);
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            ..Default::default()
        }))
        .map_err(|e| GpuError::NoAdapter(e.to_string()))?;
        let info = adapter.get_info();
        let adapter_name = format!("{} ({:?}, {:?})", info.name, info.backend, info.device_type);
        let hist_bytes = (max_streams * HISTORY * 4) as u64;
        let out_bytes = (max_streams * max_len * 4) as u64;
        let limits = required_limits(&adapter, hist_bytes.max(out_bytes))?;
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("pnbtr"),
            required_features: wgpu::Features::empty(),
            required_limits: limits,
            ..Default::default()
        }))
        .map_err(|e| GpuError::Device(e.to_string()))?;
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("pnbtr.wgsl"),
            source: wgpu::ShaderSource::Wgsl(SHADER_SOURCE.into()),
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some("pnbtr"),
            layout: None,
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        });
        let usage_rw = wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_DST
            | wgpu::BufferUsages::COPY_SRC;
        let hist_buf = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("pnbtr history"),
            size: hist_bytes,
            usage: usage_rw,
            mapped_at_creation: false,
        });
        let out_buf = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("pnbtr out"),
            size: out_bytes,
            usage: usage_rw,
            mapped_at_creation: false,
        });
        let read_buf = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("pnbtr readback"),
            size: out_bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let params_buf = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("pnbtr params"),
            size: 16,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        debug_assert_eq!(model.weights.len(), N_WEIGHTS);
        let weights_buf = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("pnbtr weights"),
            size: (N_WEIGHTS * 4) as u64,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        queue.write_buffer(&weights_buf, 0, bytemuck::cast_slice(&model.weights));
        let layout = pipeline.get_bind_group_layout(0);
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("pnbtr"),
            layout: &layout,
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: hist_buf.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: out_buf.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: params_buf.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 3,
                    resource: weights_buf.as_entire_binding(),
                },
            ],
        });
        Ok(Self {
            device,
            queue,
            pipeline,
            bind_group,
            hist_buf,
            out_buf,
            read_buf,
            params_buf,
            max_streams,
            max_len,
            adapter_name,
        })
    }

    /// Adapter description, e.g. `llvmpipe (LLVM 15.0.6, 256 bits) (Vulkan, Cpu)`.
    pub fn adapter_name(&self) -> &str {
        &self.adapter_name
    }

    /// Capacity in streams.
    pub fn max_streams(&self) -> usize {
        self.max_streams
    }

    /// Predicts `len` samples for each of `streams` histories. `histories` is
    /// `streams * HISTORY` samples (stream-major, newest last), `out` is
    /// `streams * len`. Blocks until the results are back.
    pub fn predict_batch(
        &mut self,
        histories: &[f32],
        len: usize,
        out: &mut [f32],
    ) -> Result<(), GpuError> {
        let streams = histories.len() / HISTORY;
        if histories.len() != streams * HISTORY
            || out.len() != streams * len
            || streams == 0
            || len == 0
        {
            return Err(GpuError::BadInput);
        }
        if streams > self.max_streams || len > self.max_len {
            return Err(GpuError::TooLarge {
                streams,
                len,
                max_streams: self.max_streams,
                max_len: self.max_len,
            });
        }
        let params: [u32; 4] = [streams as u32, len as u32, 0, 0];
        self.queue
            .write_buffer(&self.params_buf, 0, bytemuck::cast_slice(&params));
        self.queue
            .write_buffer(&self.hist_buf, 0, bytemuck::cast_slice(histories));
        let bytes = (streams * len * 4) as u64;
        let mut enc = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("pnbtr"),
            });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("pnbtr"),
                timestamp_writes: None,
            });
            pass.set_pipeline(&self.pipeline);
            pass.set_bind_group(0, &self.bind_group, &[]);
            pass.dispatch_workgroups(streams as u32, 1, 1);
        }
        enc.copy_buffer_to_buffer(&self.out_buf, 0, &self.read_buf, 0, bytes);
        self.queue.submit(Some(enc.finish()));
        let slice = self.read_buf.slice(..bytes);
        let (tx, rx) = mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: None,
                timeout: Some(std::time::Duration::from_secs(30)),
            })
            .map_err(|e| GpuError::Readback(e.to_string()))?;
        match rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(GpuError::Readback(e.to_string())),
            Err(e) => return Err(GpuError::Readback(e.to_string())),
        }
        {
            let view = slice
                .get_mapped_range()
                .map_err(|e| GpuError::Readback(e.to_string()))?;
            out.copy_from_slice(bytemuck::cast_slice(&view));
        }
        self.read_buf.unmap();
        Ok(())
    }
}

/// [`Predictor`] that sends all channels of a gap start to the GPU in one
/// dispatch (the kernel computes the whole continuation), falling back to
/// the CPU twin if a dispatch fails. `extend` copies from the result.
///
/// Thread-safe: no. Realtime-safe: no (blocks on the GPU; see module doc).
pub struct GpuPredictor {
    engine: GpuPnbtr,
    flat_hist: Vec<f32>,
    flat_out: Vec<f32>,
    /// Samples per stream of the current gap's GPU result in `flat_out`.
    len: usize,
    /// The current gap is served by the CPU twin (dispatch failed or the
    /// batch does not fit).
    on_cpu: bool,
    fallback: super::methods::PnbtrPredictor,
    /// Dispatches that failed and were served by the CPU twin instead.
    pub gpu_failures: u64,
}

impl GpuPredictor {
    /// Wraps an engine built for at least the stream's channel count.
    pub fn new(engine: GpuPnbtr) -> Self {
        let streams = engine.max_streams;
        let len = engine.max_len;
        Self {
            flat_hist: vec![0.0; streams * HISTORY],
            flat_out: vec![0.0; streams * len],
            len: 0,
            on_cpu: true,
            fallback: super::methods::PnbtrPredictor::new(PnbtrModel::builtin(), len),
            engine,
            gpu_failures: 0,
        }
    }

    fn start_on_cpu(&mut self, histories: &[Vec<f32>], last: usize) {
        self.on_cpu = true;
        for (ch, h) in histories.iter().enumerate() {
            self.fallback.start(ch, h, last);
        }
    }
}

impl Predictor for GpuPredictor {
    fn prepare(&mut self, channels: usize) {
        self.fallback.prepare(channels);
    }

    fn start(&mut self, ch: usize, h: &[f32], last: usize) {
        // Single-channel starts are not batched: serve them on the CPU.
        self.on_cpu = true;
        self.fallback.start(ch, h, last);
    }

    fn start_all(&mut self, histories: &[Vec<f32>], last: usize) {
        let n = histories.len();
        let len = MAX_GAP.min(self.engine.max_len);
        if n == 0 || n > self.engine.max_streams || len < MAX_GAP {
            self.start_on_cpu(histories, last);
            return;
        }
        for (i, h) in histories.iter().enumerate() {
            self.flat_hist[i * HISTORY..(i + 1) * HISTORY].copy_from_slice(h);
        }
        let res = self.engine.predict_batch(
            &self.flat_hist[..n * HISTORY],
            len,
            &mut self.flat_out[..n * len],
        );
        match res {
            Ok(()) => {
                self.on_cpu = false;
                self.len = len;
            }
            Err(_) => {
                self.gpu_failures += 1;
                self.start_on_cpu(histories, last);
            }
        }
    }

    fn extend(&mut self, ch: usize, h: &[f32], from: usize, out: &mut [f32]) {
        if self.on_cpu {
            self.fallback.extend(ch, h, from, out);
        } else {
            let base = ch * self.len + from;
            out.copy_from_slice(&self.flat_out[base..base + out.len()]);
        }
    }

    fn name(&self) -> &'static str {
        "pnbtr-gpu"
    }
}
