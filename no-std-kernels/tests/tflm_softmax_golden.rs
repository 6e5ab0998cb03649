//! Golden test: `softmax_i8` on the int8 logits TFLite Micro computed for the
//! MLPerf Tiny models reproduces TFLM's int8 softmax outputs exactly.
//!
//! Data: `testdata/mlperf-tiny/ref/{kws,vww,ic}/{seeded,real}.tflm_int8_logits.npy`
//! (the softmax input) and `.../{seeded,real}.tflm_int8.npy` (its output,
//! scale 1/256, zero point -128); the logits' quantization is recorded in
//! `testdata/mlperf-tiny/ref/index.json` (beta is 1.0 for all models). The
//! anomaly-detection model (`ad`) has no softmax.

use edgefleet_kernels::reference::{SoftmaxOutput, SoftmaxParams, softmax_i8};
use std::path::PathBuf;

fn ref_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/mlperf-tiny/ref")
}

fn read_i8(path: &PathBuf) -> (Vec<u64>, Vec<i8>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let shape = npy.shape().to_vec();
    (shape, npy.into_vec::<i8>().unwrap())
}

/// `(model, logits scale, logits zero point)`, as in `index.json` (the
/// scales are f32 values printed as f64).
const MODELS: [(&str, f64, i32); 3] = [
    ("kws", 0.144_692_510_366_439_82, 14),
    ("vww", 0.014_636_218_547_821_045, -5),
    ("ic", 0.171_853_512_525_558_47, 24),
];

#[test]
fn index_json_matches_the_constants() {
    // Guards the constants above against the recorded quantization.
    let index = std::fs::read_to_string(ref_dir().join("index.json")).unwrap();
    for (model, scale, zero_point) in MODELS {
        let at = index.find(&format!("ref/{model}/seeded.tflm_int8_logits")).unwrap();
        let tail = &index[at..];
        let scale_at = tail.find("\"scale\":").unwrap() + "\"scale\":".len();
        let scale_str: String = tail[scale_at..]
            .trim_start()
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == 'e' || *c == '-')
            .collect();
        let zp_at = tail.find("\"zero_point\":").unwrap() + "\"zero_point\":".len();
        let zp_str: String =
            tail[zp_at..].trim_start().chars().take_while(|c| c.is_ascii_digit() || *c == '-').collect();
        assert_eq!(scale_str.parse::<f64>().unwrap(), scale, "{model} scale");
        assert_eq!(f64::from(scale as f32), scale, "{model} scale is an f32");
        assert_eq!(zp_str.parse::<i32>().unwrap(), zero_point, "{model} zero point");
    }
}

#[test]
fn softmax_matches_tflm_exactly() {
    let mut checked = 0;
    for (model, logits_scale, _zero_point) in MODELS {
        let params = SoftmaxParams::from_quant(1.0, logits_scale as f32, 1.0 / 256.0, -128).unwrap();
        assert_eq!(params.output, SoftmaxOutput::Tflite256);
        for input in ["seeded", "real"] {
            let dir = ref_dir().join(model);
            let (shape, logits) = read_i8(&dir.join(format!("{input}.tflm_int8_logits.npy")));
            let (out_shape, want) = read_i8(&dir.join(format!("{input}.tflm_int8.npy")));
            assert_eq!(shape, out_shape, "{model}/{input}");
            let depth = *shape.last().unwrap() as usize;
            let mut got = vec![0i8; logits.len()];
            softmax_i8(&params, depth, &logits, &mut got).unwrap();
            assert_eq!(got, want, "{model}/{input}: logits {logits:?}, params {params:?}");
            checked += 1;
        }
    }
    assert_eq!(checked, 6);
}
