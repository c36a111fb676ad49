//! No input makes the producer panic: arbitrary frames (valid headers,
//! random opcodes, magics, sections) before and after a full login and
//! DCP_OPEN, with streams running.

mod producer_harness;

use bytes::BytesMut;
use dcp_proto::msg::OpenFlags;
use producer_harness::*;
use proptest::prelude::*;

fn frame() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![
            Just(0x80u8),
            Just(0x81),
            Just(0x08),
            Just(0x18),
            any::<u8>()
        ],
        prop_oneof![
            4 => 0x50u8..=0x67,
            2 => 0x00u8..=0x22,
            1 => prop::sample::select(vec![0x3du8, 0x48, 0x89, 0x96, 0xb5, 0xfe, 0xef, 0x10]),
            1 => any::<u8>(),
        ],
        prop::collection::vec(any::<u8>(), 0..4),
        prop_oneof![
            Just(0usize),
            Just(4),
            Just(8),
            Just(20),
            Just(48),
            0usize..64
        ],
        prop::collection::vec(any::<u8>(), 0..12),
        prop::collection::vec(any::<u8>(), 0..40),
        any::<u8>(),
        0u16..6,
        any::<u64>(),
    )
        .prop_map(
            |(magic, opcode, framing, extras_len, key, value, datatype, vb, cas)| {
                let flexible = magic == 0x08 || magic == 0x18;
                let framing = if flexible { framing } else { Vec::new() };
                let extras: Vec<u8> = (0..extras_len).map(|i| (i * 7) as u8).collect();
                let body = framing.len() + extras.len() + key.len() + value.len();
                let mut f = vec![magic, opcode];
                if flexible {
                    f.extend_from_slice(&[framing.len() as u8, key.len() as u8]);
                } else {
                    f.extend_from_slice(&(key.len() as u16).to_be_bytes());
                }
                f.extend_from_slice(&[extras.len() as u8, datatype]);
                f.extend_from_slice(&vb.to_be_bytes());
                f.extend_from_slice(&(body as u32).to_be_bytes());
                f.extend_from_slice(&7u32.to_be_bytes());
                f.extend_from_slice(&cas.to_be_bytes());
                for section in [framing, extras, key, value] {
                    f.extend_from_slice(&section);
                }
                f
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_frames_never_panic(frames in prop::collection::vec(frame(), 1..12), logged_in in any::<bool>()) {
        let mut h = Harness::new(config(4));
        for i in 0..20 {
            h.set(&format!("k{i}"), "v");
        }
        let mut c = if logged_in {
            let mut c = h.dcp_client("fuzz", OpenFlags::INCLUDE_DELETE_TIMES);
            h.control(&mut c, "enable_noop", "true");
            h.control(&mut c, "connection_buffer_size", "300");
            h.stream_req(&mut c, req(0, 1));
            c
        } else {
            h.connect()
        };
        for f in frames {
            let mut rx = BytesMut::from(&f[..]);
            let _ = h.node.handle_input(c.id, &mut rx, h.now);
            let mut tx = BytesMut::new();
            h.node.poll_transmit(c.id, &mut tx, 1024);
            h.set("k1", "w");
            h.advance(std::time::Duration::from_secs(30));
        }
        let _ = h.recv(&mut c);
        let _ = h.node.take_wakeups();
    }
}
