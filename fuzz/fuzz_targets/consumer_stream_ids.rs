#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    dcp_fuzz::consumer_stream_ids(data);
});
