//! Published learning curves as data (`experiments/references/*.csv`), drawn beside a
//! figure's own curves: a dashed line with a light ±std band.
//!
//! A reference file is CSV: `#` lines first (they say where the numbers come from: the paper
//! and figure, or the repository and file; the env version; the seeds; protocol differences;
//! how its steps line up with ours), then the header `step,mean` with optional `std` and `n`
//! columns, then one row per step, steps increasing.
use std::path::{Path, PathBuf};

/// A parsed reference curve.
#[derive(Debug, Clone, PartialEq)]
pub struct ReferenceCurve {
    /// The file, as the spec names it (relative to the spec's directory).
    pub path: PathBuf,
    /// (step, mean, std if given).
    pub points: Vec<(f64, f64, Option<f64>)>,
    /// The file's `#` lines, without the `#`: where the numbers come from.
    pub source: Vec<String>,
}

/// Reads and checks the reference file at `path`; the error says which line is wrong.
pub fn read(path: &Path) -> Result<ReferenceCurve, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse(&text)
        .map(|(points, source)| ReferenceCurve {
            path: path.to_path_buf(),
            points,
            source,
        })
        .map_err(|e| format!("{}: {e}", path.display()))
}

type Parsed = (Vec<(f64, f64, Option<f64>)>, Vec<String>);

fn parse(text: &str) -> Result<Parsed, String> {
    let mut source = Vec::new();
    let mut columns: Option<Vec<&str>> = None;
    let mut points: Vec<(f64, f64, Option<f64>)> = Vec::new();
    // A byte-order mark (spreadsheets write one) is no part of the first line.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (i, line) in text.lines().enumerate() {
        let at = i + 1;
        let line = line.trim_end_matches('\r');
        if let Some(comment) = line.strip_prefix('#') {
            if columns.is_some() {
                return Err(format!("line {at}: `#` lines go before the header"));
            }
            source.push(comment.trim().to_string());
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        let Some(cols) = &columns else {
            let ok = cells.len() >= 2
                && cells[0] == "step"
                && cells[1] == "mean"
                && cells.len() <= 4
                && cells[2..].iter().all(|c| ["std", "n"].contains(c))
                && !(cells.len() == 4 && cells[2] == cells[3]);
            if !ok {
                return Err(format!(
                    "line {at}: expected the header `step,mean` (then `std`, `n`), found {line:?}"
                ));
            }
            columns = Some(cells);
            continue;
        };
        if cells.len() != cols.len() {
            return Err(format!(
                "line {at}: expected {} values ({}), found {}",
                cols.len(),
                cols.join(","),
                cells.len()
            ));
        }
        let mut values = Vec::with_capacity(cells.len());
        for (name, cell) in cols.iter().zip(&cells) {
            let v: f64 = cell
                .parse()
                .map_err(|_| format!("line {at}: {name} {cell:?} is not a number"))?;
            if *name == "n" && (v < 1.0 || v.fract() != 0.0) {
                return Err(format!(
                    "line {at}: n must be a whole number of seeds >= 1, found {cell}"
                ));
            }
            if !v.is_finite() || ((*name != "mean") && v < 0.0) {
                return Err(format!(
                    "line {at}: {name} must be {}, found {cell}",
                    if *name == "mean" {
                        "finite"
                    } else {
                        "finite and >= 0"
                    }
                ));
            }
            values.push(v);
        }
        let step = values[0];
        if let Some(&(last, _, _)) = points.last()
            && step <= last
        {
            return Err(format!(
                "line {at}: steps must increase ({step} after {last})"
            ));
        }
        let std = cols.iter().position(|c| *c == "std").map(|k| values[k]);
        points.push((step, values[1], std));
    }
    if columns.is_none() {
        return Err("no header `step,mean`".into());
    }
    if points.is_empty() {
        return Err("no rows after the header".into());
    }
    if source.is_empty() {
        return Err("no `#` lines saying where the numbers come from".into());
    }
    Ok((points, source))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_files_parse_and_bad_ones_say_which_line() {
        let (points, source) =
            parse("# MBPO, Hopper\n# source: a file\nstep,mean,std\n1000,10.5,2\n2000,-3,0\n")
                .unwrap();
        assert_eq!(
            points,
            [(1000.0, 10.5, Some(2.0)), (2000.0, -3.0, Some(0.0))]
        );
        // Regression: a byte-order mark made the first line no comment.
        let (points, _) = parse("\u{feff}# x\nstep,mean\n1,2\n").unwrap();
        assert_eq!(points, [(1.0, 2.0, None)]);
        assert_eq!(source, ["MBPO, Hopper", "source: a file"]);
        let (points, _) = parse("# x\nstep,mean,n\n5,1,10\n").unwrap();
        assert_eq!(points, [(5.0, 1.0, None)]);
        for (text, says) in [
            ("# x\nstep,value\n1,2\n", "line 2: expected the header"),
            ("# x\nstep,mean\n1,2\n1,3\n", "line 4: steps must increase"),
            ("# x\nstep,mean,std\n1,2\n", "line 3: expected 3 values"),
            // Regression: repeated columns past the fourth, and a fraction of a seed, passed.
            (
                "# x\nstep,mean,std,std,std\n1,2,3,3,3\n",
                "line 2: expected the header",
            ),
            (
                "# x\nstep,mean,n\n1,2,0.5\n",
                "line 3: n must be a whole number",
            ),
            (
                "# x\nstep,mean,std\n1,2,-1\n",
                "line 3: std must be finite and >= 0",
            ),
            ("# x\nstep,mean\n1,nan\n", "line 3: mean must be finite"),
            (
                "# x\nstep,mean\n1,abc\n",
                "line 3: mean \"abc\" is not a number",
            ),
            ("# x\nstep,mean\n", "no rows"),
            ("step,mean\n1,2\n", "no `#` lines"),
            (
                "# x\nstep,mean\n# late\n1,2\n",
                "line 3: `#` lines go before",
            ),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(says), "{text:?}: {err}");
        }
    }
}
