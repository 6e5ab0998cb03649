//! The output of `compare`: one Markdown table (rows = models, columns =
//! engines, in milliseconds; then the fastest peer and our ratio to it) and
//! the same data as JSON.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::engine::Engine;
use crate::machine::Machine;
use crate::models::ModelKey;
use crate::stats::{GOAL_RATIO, Measurements, Row};

/// An engine as it ran: version and notes (threads, delegate, input).
#[derive(Clone, Debug)]
pub struct EngineInfo {
    /// The engine.
    pub engine: Engine,
    /// Its version (package or crate version).
    pub version: String,
    /// What it was set up with.
    pub notes: Vec<String>,
}

/// Everything about a run except the numbers.
#[derive(Clone, Debug)]
pub struct RunInfo {
    /// Where it ran.
    pub machine: Machine,
    /// The exact command line.
    pub command: String,
    /// Trials.
    pub trials: usize,
    /// Timed runs per pair per trial.
    pub runs: usize,
    /// Untimed runs per pair at load.
    pub warmup: usize,
    /// Untimed runs per pair at the start of each trial.
    pub trial_warmup: usize,
    /// The engines (columns).
    pub engines: Vec<EngineInfo>,
    /// Pairs that could not be measured, and why.
    pub failures: BTreeMap<(ModelKey, Engine), String>,
    /// Anything else worth saying (kernels, inputs, output checks).
    pub notes: Vec<String>,
}

/// Per-model notes of one engine, identical texts merged: `text` alone when
/// every model in `all` shares it, else `kws, ic: text`.
pub fn group_notes(notes: &[(ModelKey, String)], all: &[ModelKey]) -> Vec<String> {
    let mut by_text: Vec<(&str, Vec<ModelKey>)> = Vec::new();
    for (m, text) in notes {
        match by_text.iter_mut().find(|(t, _)| t == text) {
            Some((_, ms)) => ms.push(*m),
            None => by_text.push((text, vec![*m])),
        }
    }
    by_text
        .into_iter()
        .map(|(text, ms)| {
            if all.iter().all(|m| ms.contains(m)) {
                text.to_string()
            } else {
                format!("{}: {text}", ms.iter().map(|m| m.key()).collect::<Vec<_>>().join(", "))
            }
        })
        .collect()
}

/// Milliseconds with about four significant digits.
pub fn format_ms(v: f64) -> String {
    if v < 0.1 {
        format!("{v:.4}")
    } else if v < 10.0 {
        format!("{v:.3}")
    } else {
        format!("{v:.1}")
    }
}

/// The Markdown table.
pub fn render_table(rows: &[Row], engines: &[Engine], failures: &BTreeMap<(ModelKey, Engine), String>) -> String {
    let mut header = vec!["model".to_string()];
    header.extend(engines.iter().map(|e| e.id().to_string()));
    header.extend(["fastest peer".into(), "ours / fastest".into(), format!("≤ {GOAL_RATIO}×")]);
    let mut lines = vec![header];
    for r in rows {
        let mut line = vec![r.model.key().to_string()];
        for e in engines {
            line.push(match (r.best.get(e), failures.contains_key(&(r.model, *e))) {
                (Some(v), _) => format_ms(*v),
                (None, true) => "n/a".into(),
                (None, false) => "-".into(),
            });
        }
        line.push(r.fastest_peer.map_or("-".into(), |(e, v)| format!("{e} {}", format_ms(v))));
        line.push(r.ratio.map_or("-".into(), |x| format!("{x:.2}")));
        line.push(match r.meets_goal() {
            Some(true) => "yes".into(),
            Some(false) => "no".into(),
            None => "-".into(),
        });
        lines.push(line);
    }
    let cols = lines[0].len();
    let widths: Vec<usize> = (0..cols).map(|c| lines.iter().map(|l| l[c].chars().count()).max().unwrap_or(0)).collect();
    let fmt_line = |l: &[String]| {
        let cells: Vec<String> = l
            .iter()
            .enumerate()
            .map(|(c, s)| {
                let pad = widths[c] - s.chars().count();
                if c == 0 { format!("{s}{}", " ".repeat(pad)) } else { format!("{}{s}", " ".repeat(pad)) }
            })
            .collect();
        format!("| {} |", cells.join(" | "))
    };
    let mut out = vec![fmt_line(&lines[0])];
    let rule: Vec<String> = widths
        .iter()
        .enumerate()
        .map(|(c, w)| if c == 0 { "-".repeat(w + 2) } else { format!("{}:", "-".repeat(w + 1)) })
        .collect();
    out.push(format!("|{}|", rule.join("|")));
    out.extend(lines[1..].iter().map(|l| fmt_line(l)));
    out.join("\n")
}

/// The JSON document: run info, per model and engine the best median and
/// every trial median, the fastest peer and the ratio.
pub fn to_json(info: &RunInfo, rows: &[Row], m: &Measurements) -> Value {
    let engines: Vec<Value> = info
        .engines
        .iter()
        .map(|e| json!({ "id": e.engine.id(), "precision": e.engine.precision(), "version": e.version, "notes": e.notes }))
        .collect();
    let models: Vec<Value> = rows
        .iter()
        .map(|r| {
            let results: serde_json::Map<String, Value> = info
                .engines
                .iter()
                .map(|e| {
                    let v = match (r.best.get(&e.engine), info.failures.get(&(r.model, e.engine))) {
                        (Some(best), _) => {
                            json!({ "best_median_ms": best, "trial_medians_ms": m.trials(r.model, e.engine) })
                        }
                        (None, Some(err)) => json!({ "error": err }),
                        (None, None) => Value::Null,
                    };
                    (e.engine.id().to_string(), v)
                })
                .collect();
            json!({
                "model": r.model.key(),
                "description": r.model.description(),
                "results": results,
                "ours_ms": r.ours,
                "fastest_peer": r.fastest_peer.map(|(e, v)| json!({ "engine": e.id(), "ms": v })),
                "ours_over_fastest_peer": r.ratio,
                "meets_goal": r.meets_goal(),
            })
        })
        .collect();
    json!({
        "machine": info.machine.to_json(),
        "command": info.command,
        "method": {
            "trials": info.trials, "runs_per_trial": info.runs, "warmup_runs_at_load": info.warmup,
            "warmup_runs_per_trial": info.trial_warmup,
            "figure": "per (model, engine): median of each trial's runs, then the best (lowest) of the trial medians",
            "order": "every trial runs every pair once, interleaved, the order rotated by one pair per trial",
            "threads": 1, "goal_ratio": GOAL_RATIO,
        },
        "engines": engines,
        "models": models,
        "notes": info.notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::table;

    #[test]
    fn table_text() {
        let mut m = Measurements::default();
        m.record(ModelKey::Kws, Engine::Edgefleet, 0.2);
        m.record(ModelKey::Kws, Engine::LitertInt8, 0.05);
        let engines = [Engine::Edgefleet, Engine::LitertInt8, Engine::TflmInt8];
        let rows = table(&[ModelKey::Kws], &engines, &m);
        let failures = BTreeMap::from([((ModelKey::Kws, Engine::TflmInt8), "boom".to_string())]);
        let t = render_table(&rows, &engines, &failures);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(lines[0].starts_with("| model | edgefleet | litert-int8 | tflm-int8 | "), "{t}");
        for cell in ["0.200", "0.0500", "n/a", "litert-int8 0.0500", "4.00", "no"] {
            assert!(lines[2].contains(cell), "{cell} missing in {t}");
        }
        assert!(lines.iter().all(|l| l.chars().count() == lines[0].chars().count()), "aligned:\n{t}");
        assert!(lines[1].starts_with("|-------|----------:|"), "{t}");
    }

    #[test]
    fn notes_grouped() {
        let notes = [
            (ModelKey::Kws, "XNNPACK applied".to_string()),
            (ModelKey::Ic, "XNNPACK applied".to_string()),
            (ModelKey::Ad, "XNNPACK NOT applied".to_string()),
        ];
        assert_eq!(
            group_notes(&notes, &[ModelKey::Kws, ModelKey::Ic, ModelKey::Ad]),
            ["kws, ic: XNNPACK applied", "ad: XNNPACK NOT applied"]
        );
        assert_eq!(group_notes(&notes[..2], &[ModelKey::Kws, ModelKey::Ic]), ["XNNPACK applied"]);
    }

    #[test]
    fn ms_format() {
        assert_eq!(format_ms(0.04378), "0.0438");
        assert_eq!(format_ms(0.176), "0.176");
        assert_eq!(format_ms(18.52), "18.5");
    }
}
