#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| dcp_fuzz::cluster_client(data));
