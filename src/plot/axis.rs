//! Axes: mapping data to pixels on a linear or logarithmic scale, and
//! choosing "nice" tick values (1, 2 or 5 times a power of ten) with labels.

/// How an axis maps values to positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    Linear,
    /// Base 10; only positive values can be shown.
    Log,
}

/// A data range `[lo, hi]` drawn over the pixel range `[from, to]`
/// (`to < from` for a vertical axis, where y grows downwards).
#[derive(Debug, Clone, Copy)]
pub struct Axis {
    pub lo: f64,
    pub hi: f64,
    pub scale: Scale,
    pub from: f64,
    pub to: f64,
}

impl Axis {
    fn t(&self, v: f64) -> f64 {
        match self.scale {
            Scale::Linear => (v - self.lo) / (self.hi - self.lo),
            Scale::Log => (v.log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10()),
        }
    }

    /// The pixel position of the value `v`.
    pub fn pos(&self, v: f64) -> f64 {
        self.from + self.t(v) * (self.to - self.from)
    }

    /// Whether `v` can be drawn on this axis (finite, positive on a log axis).
    pub fn shows(&self, v: f64) -> bool {
        v.is_finite() && (self.scale == Scale::Linear || v > 0.0)
    }

    /// Tick values inside the range, with their labels.
    pub fn ticks(&self, format: fn(f64) -> String) -> Vec<(f64, String)> {
        let values = match self.scale {
            Scale::Linear => linear_ticks(self.lo, self.hi, 6),
            Scale::Log => log_ticks(self.lo, self.hi),
        };
        values.into_iter().map(|v| (v, format(v))).collect()
    }
}

/// The "nice" step near `span / target`: 1, 2 or 5 times a power of ten.
pub fn nice_step(span: f64, target: usize) -> f64 {
    let raw = span / target.max(1) as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let mantissa = raw / magnitude;
    let nice = if mantissa < 1.5 {
        1.0
    } else if mantissa < 3.5 {
        2.0
    } else if mantissa < 7.5 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

/// About `target` evenly spaced nice values within `[lo, hi]`.
pub fn linear_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
        return vec![lo];
    }
    let step = nice_step(hi - lo, target);
    let first = (lo / step - 1e-9).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    // Round away float noise (0.30000000000000004).
    (first..=last)
        .map(|k| round_to(k as f64 * step, step))
        .collect()
}

fn round_to(v: f64, step: f64) -> f64 {
    let digits = (-step.log10().floor()).max(0.0) as i32 + 1;
    let scale = 10f64.powi(digits);
    (v * scale).round() / scale
}

/// Powers of ten within `[lo, hi]`; with 2 and 5 between them when the
/// range spans at most four decades (about 11 labels at most).
pub fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let (a, b) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    let mantissas: &[f64] = if b - a <= 4 { &[1.0, 2.0, 5.0] } else { &[1.0] };
    (a..=b)
        .flat_map(|e| mantissas.iter().map(move |m| m * 10f64.powi(e)))
        .filter(|v| *v >= lo * (1.0 - 1e-9) && *v <= hi * (1.0 + 1e-9))
        .collect()
}

/// A count with a k/M/G suffix: 500, 2k, 1.5M.
pub fn format_count(v: f64) -> String {
    let (scaled, suffix) = match v.abs() {
        a if a >= 1e9 => (v / 1e9, "G"),
        a if a >= 1e6 => (v / 1e6, "M"),
        a if a >= 1e3 => (v / 1e3, "k"),
        _ => (v, ""),
    };
    let text = format!("{scaled:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}{suffix}")
}

/// A plain number with no more digits than it needs: 2, 2.5, 0.25.
pub fn format_plain(v: f64) -> String {
    let text = format!("{v:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".into()
    } else {
        text.into()
    }
}

/// A learning rate: 0 or scientific with one or two digits (1e-3, 2.5e-4).
pub fn format_sci(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let exponent = v.abs().log10().floor() as i32;
    let mantissa = format_plain(v / 10f64.powi(exponent));
    format!("{mantissa}e{exponent}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_ticks_are_nice_and_inside() {
        assert_eq!(linear_ticks(1.83, 4.21, 6), vec![2.0, 2.5, 3.0, 3.5, 4.0]);
        // 2000 / 6 = 333 rounds to the nice step 200.
        let expected: Vec<f64> = (0..=10).map(|k| k as f64 * 200.0).collect();
        assert_eq!(linear_ticks(0.0, 2000.0, 6), expected);
        assert_eq!(nice_step(1.0, 4), 0.2);
        assert_eq!(nice_step(7.9, 1), 10.0);
    }

    #[test]
    fn log_ticks_are_decades_on_wide_ranges() {
        assert_eq!(
            log_ticks(1.0, 50000.0),
            vec![1.0, 10.0, 100.0, 1000.0, 10000.0]
        );
        assert_eq!(log_ticks(1.0, 2000.0).len(), 11);
        assert_eq!(log_ticks(10.0, 300.0), vec![10.0, 20.0, 50.0, 100.0, 200.0]);
    }

    #[test]
    fn labels_are_short() {
        assert_eq!(format_count(1500.0), "1.5k");
        assert_eq!(format_count(2_000_000.0), "2M");
        assert_eq!(format_count(40.0), "40");
        assert_eq!(format_sci(0.00025), "2.5e-4");
        assert_eq!(format_sci(0.001), "1e-3");
        assert_eq!(format_plain(2.50), "2.5");
    }

    #[test]
    fn axis_maps_ends_to_pixels() {
        let axis = Axis {
            lo: 1.0,
            hi: 1000.0,
            scale: Scale::Log,
            from: 100.0,
            to: 400.0,
        };
        assert!((axis.pos(1.0) - 100.0).abs() < 1e-9);
        assert!((axis.pos(10.0) - 200.0).abs() < 1e-9);
        assert!((axis.pos(1000.0) - 400.0).abs() < 1e-9);
        assert!(!axis.shows(0.0));
    }
}
