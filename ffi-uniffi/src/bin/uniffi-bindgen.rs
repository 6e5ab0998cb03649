//! UniFFI's binding generator, built from the same UniFFI version as the
//! library (so the two always agree):
//! `cargo run -p edgefleet-uniffi --features bindgen --bin uniffi-bindgen -- generate --library LIB --language kotlin --out-dir DIR`.

fn main() {
    uniffi::uniffi_bindgen_main()
}
