//! Split invariance of the frame decoder: any chunking of a byte stream
//! yields the same frames (and the same error, if the stream goes bad).

use bytes::{Bytes, BytesMut};
use dcp_proto::codec::{Datatype, Frame, FrameDecoder, FrameHead, Magic, Opcode};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Sections {
    request: bool,
    opcode: u8,
    framing: Vec<u8>,
    extras: Vec<u8>,
    key: Vec<u8>,
    value: Vec<u8>,
    opaque: u32,
    cas: u64,
}

fn sections() -> impl Strategy<Value = Sections> {
    (
        any::<bool>(),
        any::<u8>(),
        prop_oneof![
            Just(vec![]),
            Just(vec![0x22, 0, 1]),
            Just(vec![0x13, 1, 0, 9])
        ],
        proptest::collection::vec(any::<u8>(), 0..40),
        proptest::collection::vec(any::<u8>(), 0..40),
        proptest::collection::vec(any::<u8>(), 0..300),
        any::<u32>(),
        any::<u64>(),
    )
        .prop_map(
            |(request, opcode, framing, extras, key, value, opaque, cas)| Sections {
                request,
                opcode,
                framing,
                extras,
                key,
                value,
                opaque,
                cas,
            },
        )
}

fn encode(frames: &[Sections]) -> Bytes {
    let mut buf = BytesMut::new();
    for f in frames {
        FrameHead {
            magic: if f.request {
                Magic::ClientRequest
            } else {
                Magic::ClientResponse
            },
            opcode: Opcode::from_raw(f.opcode),
            datatype: Datatype::JSON,
            vbucket_or_status: 3,
            opaque: f.opaque,
            cas: f.cas,
        }
        .encode(&mut buf, &f.framing, &f.extras, &f.key, &f.value)
        .expect("sections fit");
    }
    buf.freeze()
}

/// Feeds `input` in pieces cut at `cuts`; returns frames and the error text.
fn decode_chunked(input: &[u8], cuts: &[usize], max: usize) -> (Vec<Frame>, Option<String>) {
    let mut decoder = FrameDecoder::with_max_frame_len(max);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    points.push(input.len());
    points.sort_unstable();
    let mut at = 0;
    for point in points {
        buf.extend_from_slice(&input[at..point]);
        at = point;
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(e) => return (frames, Some(e.to_string())),
            }
        }
    }
    (frames, None)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_chunking_yields_the_same_frames(
        frames in proptest::collection::vec(sections(), 0..12),
        cuts in proptest::collection::vec(any::<usize>(), 0..40),
    ) {
        let input = encode(&frames);
        let whole = decode_chunked(&input, &[], usize::MAX);
        let chunked = decode_chunked(&input, &cuts, usize::MAX);
        prop_assert_eq!(&whole, &chunked);
        prop_assert_eq!(whole.1, None);
        prop_assert_eq!(whole.0.len(), frames.len());
        for (frame, f) in whole.0.iter().zip(&frames) {
            prop_assert_eq!(frame.extras(), &f.extras[..]);
            prop_assert_eq!(frame.key_slice(), &f.key[..]);
            prop_assert_eq!(frame.value_slice(), &f.value[..]);
            prop_assert_eq!(frame.opaque(), f.opaque);
        }
    }

    #[test]
    fn garbage_gives_the_same_error_whatever_the_chunking(
        frames in proptest::collection::vec(sections(), 0..4),
        garbage in proptest::collection::vec(any::<u8>(), 0..64),
        cuts in proptest::collection::vec(any::<usize>(), 0..20),
        max in 24usize..400,
    ) {
        let mut input = encode(&frames).to_vec();
        input.extend_from_slice(&garbage);
        prop_assert_eq!(decode_chunked(&input, &[], max), decode_chunked(&input, &cuts, max));
    }

    #[test]
    fn frames_above_the_maximum_are_refused(
        frame in sections(),
        max in 24usize..200,
    ) {
        let input = encode(std::slice::from_ref(&frame));
        let (frames, err) = decode_chunked(&input, &[], max);
        if input.len() > max {
            prop_assert!(frames.is_empty());
            prop_assert!(err.expect("refused").contains("exceeds the maximum"));
        } else {
            prop_assert_eq!(frames.len(), 1);
        }
    }
}
