//! "Encoding never allocates when given a buffer": every message kind is
//! encoded under a counting global allocator, and the envelope decode of a
//! binary audio frame (the per-packet receive path) is checked too.

use bridge_core::protocol::{
    audio::{write_binary_from_f32, AudioHeader},
    decode_frame, AudioPayload, ClockPing, ClockPong, FormatType, Goodbye, Header, Heartbeat,
    JmidCompact, JmidEvent, Message, MessageKind, MidiMessage, PeerId, SampleFormat, SessionKey,
    StreamInfo, StreamKind, SyncCalibrationBlock, TimeSignature, Transport, TransportCommand,
};
use std::alloc::{GlobalAlloc, Layout, System};
use std::borrow::Cow;
use std::cell::Cell;

struct Counting;
thread_local!(static ALLOCS: Cell<usize> = const { Cell::new(0) });

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.with(|a| a.set(a.get() + 1));
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_in(f: impl FnOnce()) -> usize {
    let before = ALLOCS.with(Cell::get);
    f();
    ALLOCS.with(Cell::get) - before
}

#[test]
fn the_counter_sees_allocations() {
    // Negative control: the test would catch an allocation.
    assert!(allocations_in(|| drop(std::hint::black_box(vec![1u8; 10]))) > 0);
}

#[test]
fn encoding_every_kind_into_a_buffer_does_not_allocate() {
    let peer = PeerId(0xc6b5_4a79);
    let ev = |message| JmidEvent {
        message,
        timestamp: 5,
        burst_id: 0xa1,
        burst_index: 1,
        burst_size: 3,
    };
    let pcm: Vec<u8> = (0..64u8).collect();
    let messages = vec![
        Message::Heartbeat(Heartbeat {
            peer_id: peer,
            name: Cow::Borrowed("Studio \"A\" ✓"),
            app: Cow::Borrowed("toaster/0.1"),
            port: 47700,
            streams: vec![StreamInfo {
                stream_id: 1,
                kind: StreamKind::Audio,
                channels: Some(2),
                sample_rate: Some(48000),
                name: Some("Guitar \"DI\" ✓".into()),
            }],
        }),
        Message::Goodbye(Goodbye { peer_id: peer }),
        Message::ClockPing(ClockPing {
            peer_id: peer,
            t1: 1,
        }),
        Message::ClockPong(ClockPong {
            peer_id: peer,
            to: PeerId(2),
            t1: 1,
            t2: 2,
            t3: 3,
        }),
        Message::SyncCalibrationBlock(SyncCalibrationBlock {
            peer_id: peer,
            gpu_time_ns: 1,
            cpu_time_ns: 2,
            offset_ns: -3,
            drift_ppm: 0.5,
            quality: 0.9,
        }),
        Message::Transport(Transport {
            command: TransportCommand::Play,
            timestamp: 9,
            position: 1.5,
            bpm: 120.0,
            time_signature: TimeSignature::new(7, 8).unwrap(),
            master_peer: peer,
            beat: Some(2.0),
            seq: Some(4),
        }),
        Message::Jmid(ev(MidiMessage::NoteOn {
            channel: 1,
            note: 60,
            velocity: 100,
        })),
        Message::Jmid(ev(MidiMessage::Sysex(vec![0x7e, 0x7f, 0x09, 0x01]))),
        Message::JmidCompact(JmidCompact {
            events: vec![
                ev(MidiMessage::PitchBend {
                    channel: 2,
                    value: -8192,
                }),
                ev(MidiMessage::Sysex(vec![1, 2, 3])),
            ],
        }),
        Message::Audio(AudioPayload {
            stream_id: 1,
            channels: 2,
            sample_format: SampleFormat::I16,
            sample_rate: 48000,
            first_sample: 7,
            frames: 16,
            jellie: 0,
            pcm: Cow::Owned(pcm.clone()),
        }),
    ];
    let header = Header::new(
        MessageKind::Goodbye,
        FormatType::StandardJson,
        uuid::Uuid::nil(),
        1,
        0,
        0,
    );
    let key = SessionKey([3; 32]);
    let mut out = vec![0u8; 2048];
    for m in &messages {
        for k in [None, Some(&key)] {
            let n = allocations_in(|| {
                m.encode(&header, k, &mut out).unwrap();
            });
            assert_eq!(n, 0, "{:?} allocated {n} times", m.kind());
        }
    }
    let Message::Audio(a) = &messages[9] else {
        unreachable!()
    };
    assert_eq!(
        allocations_in(|| {
            a.write_json(&mut out).unwrap();
        }),
        0,
        "JSON audio"
    );
    let samples = [0.25f32; 32];
    let h = AudioHeader {
        stream_id: 1,
        channels: 2,
        sample_format: SampleFormat::F32,
        sample_rate: 48000,
        first_sample: 0,
        frames: 16,
        jellie: 0,
    };
    let n = allocations_in(|| {
        write_binary_from_f32(&mut out, &h, &samples).unwrap();
    });
    assert_eq!(n, 0, "binary audio from f32");
    // Receive path: envelope + binary audio payload borrow the datagram.
    let len = messages[9].encode(&header, None, &mut out).unwrap();
    let n = allocations_in(|| {
        let f = decode_frame(&out[..len], None).unwrap();
        let p = AudioPayload::parse_binary(f.payload).unwrap();
        let mut floats = [0f32; 32];
        assert_eq!(p.read_into(&mut floats), 32);
    });
    assert_eq!(n, 0, "decoding binary audio");
}
