//! The statistics every report uses, in one place: medians and spreads over repeats,
//! pooled latency histograms, least-squares fits and ratios of medians.
//!
//! ```
//! use reports::stats::{least_squares, Spread};
//!
//! let s = Spread::of(&[900.0, 100.0, 200.0]).unwrap();
//! assert_eq!((s.median, s.min, s.max), (200.0, 100.0, 900.0));
//! let f = least_squares(&[(1.0, 5.0), (2.0, 7.0), (4.0, 11.0)]).unwrap();
//! assert_eq!((f.slope, f.intercept, f.r2), (2.0, 3.0, 1.0));
//! ```

use std::collections::BTreeMap;

/// Median of a set of values (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

/// Median absolute deviation from the median.
pub fn mad(values: &[f64]) -> Option<f64> {
    let m = median(values)?;
    let dev: Vec<f64> = values.iter().map(|v| (v - m).abs()).collect();
    median(&dev)
}

/// Median and range of one quantity over the repeats of a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// The median.
    pub median: f64,
    /// The smallest value.
    pub min: f64,
    /// The largest value.
    pub max: f64,
    /// How many values.
    pub runs: usize,
    /// Robust relative spread: 1.4826 × MAD / median (the relative standard deviation of
    /// normal data), 0 for a single value or a zero median.
    pub rel_spread: f64,
}

impl Spread {
    /// The spread of `values`; `None` when there are none.
    pub fn of(values: &[f64]) -> Option<Spread> {
        let median = median(values)?;
        let (min, max) = values
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), x| {
                (l.min(*x), h.max(*x))
            });
        let rel_spread = match mad(values) {
            Some(d) if median != 0.0 && values.len() > 1 => 1.4826 * d / median.abs(),
            _ => 0.0,
        };
        Some(Spread {
            median,
            min,
            max,
            runs: values.len(),
            rel_spread,
        })
    }
}

/// The ratio of two medians, `b / a`, with a relative uncertainty propagated from each
/// side's robust spread: `±sqrt(sa² + sb²)`, as hyperfine propagates standard deviations.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ratio {
    /// median(b) / median(a).
    pub ratio: f64,
    /// Relative uncertainty of the ratio (0.08 = ±8 %); `None` when either side has a
    /// single run, so nothing is known about its noise.
    pub uncertainty: Option<f64>,
}

impl Ratio {
    /// `b / a` from the two spreads; `None` when `a`'s median is not positive.
    pub fn of(a: &Spread, b: &Spread) -> Option<Ratio> {
        if a.median <= 0.0 || b.median < 0.0 {
            return None;
        }
        let uncertainty = (a.runs > 1 && b.runs > 1)
            .then(|| (a.rel_spread.powi(2) + b.rel_spread.powi(2)).sqrt());
        Some(Ratio {
            ratio: b.median / a.median,
            uncertainty,
        })
    }

    /// Whether the ratio is beyond `1 ± threshold` and beyond its own uncertainty.
    pub fn exceeds(&self, threshold: f64) -> bool {
        let noise = self.uncertainty.unwrap_or(0.0);
        self.ratio > 1.0 + threshold.max(noise) || self.ratio < 1.0 / (1.0 + threshold.max(noise))
    }
}

/// Geometric mean of positive values (the mean of ratios that treats 2× and ½× alike).
pub fn geometric_mean(values: &[f64]) -> Option<f64> {
    let pos: Vec<f64> = values.iter().copied().filter(|v| *v > 0.0).collect();
    if pos.is_empty() {
        return None;
    }
    Some((pos.iter().map(|v| v.ln()).sum::<f64>() / pos.len() as f64).exp())
}

/// Least-squares line `y = slope·x + intercept` and its R².
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fit {
    /// Change of y per unit of x.
    pub slope: f64,
    /// y at x = 0, as computed (it may be negative).
    pub intercept: f64,
    /// Coefficient of determination (1 = every point on the line).
    pub r2: f64,
}

/// Fits a least-squares line through the points; `None` with fewer than two distinct x.
pub fn least_squares(points: &[(f64, f64)]) -> Option<Fit> {
    if points.len() < 2 {
        return None;
    }
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let syy: f64 = points.iter().map(|p| (p.1 - my).powi(2)).sum();
    if sxx == 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    let r2 = if syy == 0.0 {
        1.0
    } else {
        sxy * sxy / (sxx * syy)
    };
    Some(Fit {
        slope,
        intercept: my - slope * mx,
        r2,
    })
}

/// A latency distribution pooled from several runs' log₂ buckets: (upper bound in ns,
/// count). A bucket with upper bound `u` holds the values in `((u + 1) / 2, u + 1]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pooled {
    /// Count per bucket upper bound.
    pub buckets: BTreeMap<u64, u64>,
}

impl Pooled {
    /// Adds one run's buckets.
    pub fn add(&mut self, buckets: &[(u64, u64)]) {
        for (upper, n) in buckets {
            *self.buckets.entry(*upper).or_default() += n;
        }
    }

    /// Observations in all buckets.
    pub fn total(&self) -> u64 {
        self.buckets.values().sum()
    }

    /// The bucket holding quantile `q` (0.5 for the median) as `(low, high)` in ns: the
    /// smallest bucket where the cumulative count reaches `q` of the total.
    pub fn quantile_bucket(&self, q: f64) -> Option<(f64, f64)> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let target = (q * total as f64).ceil().max(1.0) as u64;
        let mut cumulative = 0;
        for (upper, n) in &self.buckets {
            cumulative += n;
            if cumulative >= target {
                let high = *upper as f64 + 1.0;
                return Some((high / 2.0, high));
            }
        }
        None
    }

    /// (upper bound in ns, share in %) per bucket, for charts.
    pub fn shares(&self) -> Vec<(f64, f64)> {
        let total = self.total();
        self.buckets
            .iter()
            .map(|(u, n)| (*u as f64, 100.0 * *n as f64 / total.max(1) as f64))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_by_hand() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        // |x − 2| over 1, 2, 9 is 1, 0, 7: median 1.
        assert_eq!(mad(&[1.0, 2.0, 9.0]), Some(1.0));
    }

    #[test]
    fn spread_by_hand() {
        let s = Spread::of(&[900.0, 100.0, 200.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.runs), (200.0, 100.0, 900.0, 3));
        // MAD: |900−200|, |100−200|, 0 → 700, 100, 0 → 100; 1.4826 × 100 / 200.
        assert!((s.rel_spread - 0.7413).abs() < 1e-12);
        assert_eq!(Spread::of(&[5.0]).unwrap().rel_spread, 0.0);
        assert_eq!(Spread::of(&[]), None);
    }

    #[test]
    fn ratio_of_medians_with_propagated_spread() {
        let a = Spread::of(&[100.0, 110.0, 90.0]).unwrap(); // median 100, MAD 10
        let b = Spread::of(&[310.0, 300.0, 290.0]).unwrap(); // median 300, MAD 10
        let r = Ratio::of(&a, &b).unwrap();
        assert_eq!(r.ratio, 3.0);
        let sa: f64 = 1.4826 * 10.0 / 100.0;
        let sb: f64 = 1.4826 * 10.0 / 300.0;
        assert!((r.uncertainty.unwrap() - (sa * sa + sb * sb).sqrt()).abs() < 1e-12);
        assert!(r.exceeds(0.2));
        let one = Spread::of(&[100.0]).unwrap();
        assert_eq!(Ratio::of(&one, &b).unwrap().uncertainty, None);
        let same = Ratio::of(&a, &a).unwrap();
        assert!(!same.exceeds(0.0));
        let zero = Spread::of(&[0.0]).unwrap();
        assert_eq!(Ratio::of(&zero, &b), None);
    }

    #[test]
    fn geometric_mean_by_hand() {
        assert!((geometric_mean(&[2.0, 0.5]).unwrap() - 1.0).abs() < 1e-12);
        assert!((geometric_mean(&[1.0, 4.0]).unwrap() - 2.0).abs() < 1e-12);
        assert_eq!(geometric_mean(&[]), None);
    }

    #[test]
    fn least_squares_by_hand() {
        let f = least_squares(&[(1.0, 5.0), (2.0, 7.0), (4.0, 11.0)]).unwrap();
        assert_eq!((f.slope, f.intercept, f.r2), (2.0, 3.0, 1.0));
        // (0,1), (1,3), (2,2): mean x 1, mean y 2; sxy = 1, sxx = 2, syy = 2.
        let g = least_squares(&[(0.0, 1.0), (1.0, 3.0), (2.0, 2.0)]).unwrap();
        assert_eq!((g.slope, g.intercept, g.r2), (0.5, 1.5, 0.25));
        // A negative intercept stays negative.
        let h = least_squares(&[(100.0, 100.0), (200.0, 300.0)]).unwrap();
        assert_eq!((h.slope, h.intercept), (2.0, -100.0));
        assert_eq!(least_squares(&[(1.0, 5.0)]), None);
        assert_eq!(least_squares(&[(1.0, 5.0), (1.0, 6.0)]), None);
    }

    #[test]
    fn pooled_buckets_by_hand() {
        let mut p = Pooled::default();
        // 95 exits in (16 µs, 32 µs], 5 in (1 ms, 2 ms].
        p.add(&[(32_767, 60)]);
        p.add(&[(32_767, 35), (2_097_151, 5)]);
        assert_eq!(p.total(), 100);
        assert_eq!(p.quantile_bucket(0.5), Some((16_384.0, 32_768.0)));
        assert_eq!(p.quantile_bucket(0.95), Some((16_384.0, 32_768.0)));
        assert_eq!(p.quantile_bucket(0.99), Some((1_048_576.0, 2_097_152.0)));
        assert_eq!(p.shares(), [(32_767.0, 95.0), (2_097_151.0, 5.0)]);
        assert_eq!(Pooled::default().quantile_bucket(0.5), None);
    }
}
