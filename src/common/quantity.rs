//! Kubernetes resource quantities (`500m`, `128Mi`, `1e3`) as numbers, for the components
//! that compare or convert them (API validation, the kubelet's cgroup limits).

/// A quantity as a number (approximate; enough for comparisons and cgroup values), or None
/// when it does not match upstream's quantity syntax.
pub fn parse(text: &str) -> Option<f64> {
    let text = text.trim();
    let num_end = text
        .char_indices()
        .find(|(i, c)| !(c.is_ascii_digit() || *c == '.' || ((*c == '+' || *c == '-') && *i == 0)))
        .map_or(text.len(), |(i, _)| i);
    let (num, suffix) = text.split_at(num_end);
    if num.is_empty() || num == "+" || num == "-" || num.matches('.').count() > 1 {
        return None;
    }
    let base: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        other => {
            let exp = other
                .strip_prefix('e')
                .or_else(|| other.strip_prefix('E'))?;
            let e: i32 = exp.parse().ok()?;
            10f64.powi(e)
        }
    };
    Some(base * mult)
}
