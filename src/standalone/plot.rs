//! `latency_quantiles.svg` and `.png`: latency quantiles (and the mean)
//! per phase, with the network round trip, against the phases' request
//! rates. Both are drawn here by hand: the SVG as text, the PNG by a tiny
//! rasteriser (lines and boxes, no text) and a stored-deflate PNG encoder,
//! so no font or image crate is needed.

use std::fmt::Write as _;

/// One line of the chart: a value (ms) per phase, None where nothing was measured.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub color: [u8; 3],
    pub values: Vec<Option<f64>>,
}

const W: u32 = 720;
const H: u32 = 420;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 170.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 50.0;

/// Colours for series in order.
pub const PALETTE: [[u8; 3]; 8] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
];

struct Frame {
    n: usize,
    y_max: f64,
}

impl Frame {
    fn new(series: &[Series], n: usize) -> Frame {
        let max = series
            .iter()
            .flat_map(|s| s.values.iter().flatten())
            .fold(0.0f64, |a, &b| a.max(b));
        Frame {
            n: n.max(1),
            y_max: nice_ceiling(max),
        }
    }

    fn x(&self, i: usize) -> f64 {
        let span = f64::from(W) - LEFT - RIGHT;
        if self.n == 1 {
            LEFT + span / 2.0
        } else {
            LEFT + span * i as f64 / (self.n - 1) as f64
        }
    }

    fn y(&self, v: f64) -> f64 {
        let span = f64::from(H) - TOP - BOTTOM;
        f64::from(H) - BOTTOM - span * (v / self.y_max).clamp(0.0, 1.0)
    }
}

/// The smallest 1, 2 or 5 times a power of ten at or above `v` (1 for 0).
fn nice_ceiling(v: f64) -> f64 {
    if !(v.is_finite() && v > 0.0) {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|&c| c >= v)
        .unwrap_or(10.0 * p)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The SVG document; `rates` label the x axis (one per phase).
pub fn svg(title: &str, rates: &[f64], series: &[Series]) -> String {
    let f = Frame::new(series, rates.len());
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="18" text-anchor="middle" font-size="14">{}</text>"#,
        W / 2,
        esc(title)
    );
    let (x0, x1, y0, y1) = (LEFT, f64::from(W) - RIGHT, TOP, f64::from(H) - BOTTOM);
    for k in 0..=5 {
        let v = f.y_max * f64::from(k) / 5.0;
        let y = f.y(v);
        let _ = writeln!(
            s,
            r##"<line x1="{x0}" y1="{y:.1}" x2="{x1}" y2="{y:.1}" stroke="#ddd"/>"##
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            x0 - 6.0,
            y + 4.0,
            trim(v)
        );
    }
    let _ = writeln!(s, r#"<line x1="{x0}" y1="{y1}" x2="{x1}" y2="{y1}" stroke="black"/>"#);
    let _ = writeln!(s, r#"<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="black"/>"#);
    for (i, r) in rates.iter().enumerate() {
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            f.x(i),
            y1 + 18.0,
            trim(*r)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{}" text-anchor="middle">requests per second (phase)</text>"#,
        (x0 + x1) / 2.0,
        y1 + 38.0
    );
    let _ = writeln!(
        s,
        r#"<text x="16" y="{:.1}" transform="rotate(-90 16 {:.1})" text-anchor="middle">latency (ms)</text>"#,
        (y0 + y1) / 2.0,
        (y0 + y1) / 2.0
    );
    for (k, se) in series.iter().enumerate() {
        let [r, g, b] = se.color;
        let pts: Vec<String> = se
            .values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.map(|v| format!("{:.1},{:.1}", f.x(i), f.y(v))))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="rgb({r},{g},{b})" stroke-width="2" points="{}"/>"#,
            pts.join(" ")
        );
        for p in &pts {
            let (px, py) = p.split_once(',').unwrap_or(("0", "0"));
            let _ = writeln!(s, r#"<circle cx="{px}" cy="{py}" r="3" fill="rgb({r},{g},{b})"/>"#);
        }
        let ly = TOP + 16.0 * k as f64 + 10.0;
        let _ = writeln!(
            s,
            r#"<rect x="{}" y="{:.1}" width="12" height="12" fill="rgb({r},{g},{b})"/>"#,
            x1 + 14.0,
            ly - 10.0
        );
        let _ = writeln!(s, r#"<text x="{}" y="{ly:.1}">{}</text>"#, x1 + 32.0, esc(&se.name));
    }
    s.push_str("</svg>\n");
    s
}

fn trim(v: f64) -> String {
    let s = format!("{v:.1}");
    s.strip_suffix(".0").map(str::to_owned).unwrap_or(s)
}

/// An RGB canvas.
struct Canvas {
    px: Vec<u8>,
}

impl Canvas {
    fn new() -> Canvas {
        Canvas {
            px: vec![255; (W * H * 3) as usize],
        }
    }

    fn dot(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if (0..i64::from(W)).contains(&x) && (0..i64::from(H)).contains(&y) {
            let i = ((y as u32 * W + x as u32) * 3) as usize;
            self.px[i..i + 3].copy_from_slice(&c);
        }
    }

    fn rect(&mut self, x: f64, y: f64, w: f64, h: f64, c: [u8; 3]) {
        for yy in y as i64..(y + h) as i64 {
            for xx in x as i64..(x + w) as i64 {
                self.dot(xx, yy, c);
            }
        }
    }

    /// A line `width` pixels wide (sampled every half pixel).
    fn line(&mut self, (x0, y0): (f64, f64), (x1, y1): (f64, f64), width: i64, c: [u8; 3]) {
        let steps = ((x1 - x0).abs().max((y1 - y0).abs()) * 2.0).ceil().max(1.0) as i64;
        for k in 0..=steps {
            let t = k as f64 / steps as f64;
            let (x, y) = (x0 + (x1 - x0) * t, y0 + (y1 - y0) * t);
            for dx in 0..width {
                for dy in 0..width {
                    self.dot(x as i64 + dx - width / 2, y as i64 + dy - width / 2, c);
                }
            }
        }
    }
}

/// The PNG file: the same axes, grid, lines, points and legend swatches
/// as the SVG, without text.
pub fn png(rates: &[f64], series: &[Series]) -> Vec<u8> {
    let f = Frame::new(series, rates.len());
    let mut c = Canvas::new();
    let (x0, x1, y0, y1) = (LEFT, f64::from(W) - RIGHT, TOP, f64::from(H) - BOTTOM);
    for k in 0..=5 {
        let y = f.y(f.y_max * f64::from(k) / 5.0);
        c.line((x0, y), (x1, y), 1, [221, 221, 221]);
    }
    c.line((x0, y1), (x1, y1), 1, [0, 0, 0]);
    c.line((x0, y0), (x0, y1), 1, [0, 0, 0]);
    for i in 0..rates.len() {
        c.line((f.x(i), y1), (f.x(i), y1 + 5.0), 1, [0, 0, 0]);
    }
    for (k, se) in series.iter().enumerate() {
        let pts: Vec<(f64, f64)> = se
            .values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.map(|v| (f.x(i), f.y(v))))
            .collect();
        for w in pts.windows(2) {
            c.line(w[0], w[1], 2, se.color);
        }
        for &(x, y) in &pts {
            c.rect(x - 3.0, y - 3.0, 7.0, 7.0, se.color);
        }
        c.rect(x1 + 14.0, TOP + 16.0 * k as f64, 12.0, 12.0, se.color);
    }
    encode_png(W, H, &c.px)
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &x in data {
        a = (a + u32::from(x)) % 65_521;
        b = (b + a) % 65_521;
    }
    (b << 16) | a
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// An 8-bit RGB PNG, image data as zlib with stored (uncompressed) blocks.
pub fn encode_png(w: u32, h: u32, rgb: &[u8]) -> Vec<u8> {
    let mut raw = Vec::with_capacity(rgb.len() + h as usize);
    for row in rgb.chunks((w * 3) as usize) {
        raw.push(0); // filter: none
        raw.extend_from_slice(row);
    }
    let mut z = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65_535).collect();
    for (i, block) in blocks.iter().enumerate() {
        z.push(u8::from(i + 1 == blocks.len()));
        let len = block.len() as u16;
        z.extend_from_slice(&len.to_le_bytes());
        z.extend_from_slice(&(!len).to_le_bytes());
        z.extend_from_slice(block);
    }
    z.extend_from_slice(&adler32(&raw).to_be_bytes());
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &z);
    chunk(&mut out, b"IEND", &[]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The encoder's checksums match the published check values, and the
    /// PNG holds the signature, an IHDR of the canvas size and an IEND.
    #[test]
    fn png_is_well_formed() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(adler32(b"Wikipedia"), 0x11E6_0398);
        let s = [Series {
            name: "p50".into(),
            color: PALETTE[0],
            values: vec![Some(10.0), None, Some(30.0)],
        }];
        let p = png(&[1.0, 2.0, 3.0], &s);
        assert_eq!(&p[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&p[12..16], b"IHDR");
        assert_eq!(u32::from_be_bytes(p[16..20].try_into().unwrap()), W);
        assert_eq!(u32::from_be_bytes(p[20..24].try_into().unwrap()), H);
        assert_eq!(&p[p.len() - 8..p.len() - 4], b"IEND");
        let svg = svg("t <x>", &[1.0, 2.0, 3.0], &s);
        assert!(svg.starts_with("<svg") && svg.contains("t &lt;x&gt;") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(130.0), 200.0);
    }
}
