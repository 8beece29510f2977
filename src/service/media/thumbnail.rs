//! Thumbnails: the size arithmetic (pure) and the image work (blocking; run it on the blocking
//! pool). JPEG, PNG, GIF and WebP sources; JPEG thumbnails of JPEG sources, PNG of the others,
//! and animated GIF thumbnails of animated GIFs when asked for.
//!
//! A thumbnail is never larger than the box asked for and never larger than the source:
//! `scale` fits the image inside the box keeping its aspect ratio, `crop` fills the box exactly
//! (cutting the overflow evenly from both sides), shrunk to fit inside the source when the box
//! is larger than the source in one dimension. A source that already fits inside the box is
//! served as it is.

use std::io::{BufReader, Cursor};
use std::path::Path;

use image::codecs::gif::{GifDecoder, GifEncoder, Repeat};
use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::imageops::FilterType;
use image::{AnimationDecoder, DynamicImage, Frame, ImageFormat, ImageReader, Limits, RgbaImage};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The most frames an animated thumbnail keeps (the rest of a longer animation is cut).
const MAX_FRAMES: usize = 300;
/// JPEG thumbnail quality.
const JPEG_QUALITY: u8 = 85;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Crop,
    Scale,
}

impl Method {
    pub fn as_byte(self) -> u8 {
        match self {
            Method::Crop => b'c',
            Method::Scale => b's',
        }
    }
}

/// What to serve for a thumbnail request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// The source already fits: serve it as it is.
    Original,
    /// Resize to exactly this size.
    Resize { width: u32, height: u32 },
}

/// The thumbnail size for a source of `source` pixels, a box of `width` × `height` (both at
/// least 1) and a method.
pub fn plan(source: (u32, u32), width: u32, height: u32, method: Method) -> Plan {
    let (sw, sh) = (u64::from(source.0.max(1)), u64::from(source.1.max(1)));
    let (w, h) = (u64::from(width.max(1)), u64::from(height.max(1)));
    if sw <= w && sh <= h {
        return Plan::Original;
    }
    let (out_w, out_h) = match method {
        // Fit inside the box: the side that overflows most becomes the box's.
        Method::Scale => {
            if sw * h > sh * w {
                (w, (sh * w / sw).max(1))
            } else {
                ((sw * h / sh).max(1), h)
            }
        }
        Method::Crop => {
            if w <= sw && h <= sh {
                (w, h)
            } else if sw * h < sh * w {
                // The box is relatively wider than the source: as wide as the source.
                (sw, (h * sw / w).max(1))
            } else {
                ((w * sh / h).max(1), sh)
            }
        }
    };
    // Both are at most the box and the source, so they fit in u32.
    Plan::Resize {
        width: u32::try_from(out_w).unwrap_or(u32::MAX),
        height: u32::try_from(out_h).unwrap_or(u32::MAX),
    }
}

/// A generated thumbnail.
pub struct Thumbnail {
    pub bytes: Vec<u8>,
    pub content_type: &'static str,
    pub width: u32,
    pub height: u32,
}

/// The image formats thumbnails are made of, by declared content type.
pub fn source_format(content_type: &str) -> Option<ImageFormat> {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "image/jpeg" | "image/jpg" | "image/pjpeg" => Some(ImageFormat::Jpeg),
        "image/png" => Some(ImageFormat::Png),
        "image/gif" => Some(ImageFormat::Gif),
        "image/webp" => Some(ImageFormat::WebP),
        _ => None,
    }
}

fn cannot(e: impl std::fmt::Display) -> Error {
    Error::Unknown(format!("cannot generate a thumbnail of this content: {e}"))
}

fn open(path: &Path) -> Result<BufReader<std::fs::File>> {
    std::fs::File::open(path)
        .map(BufReader::new)
        .map_err(|e| Error::internal(format!("opening media: {e}")))
}

/// The real format of the file (sniffed from its first bytes), if it is one we thumbnail.
fn sniff(path: &Path) -> Result<ImageFormat> {
    let reader = ImageReader::new(open(path)?)
        .with_guessed_format()
        .map_err(cannot)?;
    match reader.format() {
        Some(f @ (ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::Gif | ImageFormat::WebP)) => {
            Ok(f)
        }
        _ => Err(cannot("not a JPEG, PNG, GIF or WebP image")),
    }
}

/// The decoding limits for sources of at most `max_pixels` pixels.
fn limits(max_pixels: u64) -> Limits {
    let side = u32::try_from(max_pixels).unwrap_or(u32::MAX);
    let mut limits = Limits::default();
    limits.max_image_width = Some(side);
    limits.max_image_height = Some(side);
    // RGBA with 16 bits per channel at most, plus room for the decoder's own buffers.
    limits.max_alloc = Some(max_pixels.saturating_mul(8).saturating_add(64 << 20));
    limits
}

/// The format and dimensions of a source; 413 `M_TOO_LARGE` when it has more than `max_pixels`
/// pixels (read from its header only).
pub fn probe(path: &Path, max_pixels: u64) -> Result<(ImageFormat, (u32, u32))> {
    let format = sniff(path)?;
    let mut reader = ImageReader::with_format(open(path)?, format);
    reader.limits(limits(max_pixels));
    let (w, h) = reader.into_dimensions().map_err(cannot)?;
    if u64::from(w) * u64::from(h) > max_pixels || w == 0 || h == 0 {
        return Err(Error::TooLarge(format!(
            "the image is too large to thumbnail ({w}×{h} pixels)"
        )));
    }
    Ok((format, (w, h)))
}

fn resize(image: &DynamicImage, width: u32, height: u32, method: Method) -> DynamicImage {
    match method {
        Method::Scale => image.resize_exact(width, height, FilterType::Triangle),
        Method::Crop => image.resize_to_fill(width, height, FilterType::Triangle),
    }
}

/// Makes a still thumbnail of `width` × `height`; JPEG for JPEG sources, PNG otherwise.
pub fn still(
    path: &Path,
    format: ImageFormat,
    max_pixels: u64,
    width: u32,
    height: u32,
    method: Method,
) -> Result<Thumbnail> {
    let mut reader = ImageReader::with_format(open(path)?, format);
    reader.limits(limits(max_pixels));
    let image = reader.decode().map_err(cannot)?;
    let thumb = resize(&image, width, height, method);
    drop(image);
    let mut bytes = Vec::new();
    let content_type = if format == ImageFormat::Jpeg {
        let rgb = DynamicImage::ImageRgb8(thumb.to_rgb8());
        rgb.write_with_encoder(JpegEncoder::new_with_quality(&mut bytes, JPEG_QUALITY))
            .map_err(cannot)?;
        "image/jpeg"
    } else {
        thumb
            .write_with_encoder(PngEncoder::new(&mut bytes))
            .map_err(cannot)?;
        "image/png"
    };
    Ok(Thumbnail {
        bytes,
        content_type,
        width: thumb.width(),
        height: thumb.height(),
    })
}

/// Whether a GIF has more than one frame (reads frames until the second one).
pub fn is_animated_gif(path: &Path, max_pixels: u64) -> Result<bool> {
    let mut decoder = GifDecoder::new(open(path)?).map_err(cannot)?;
    image::ImageDecoder::set_limits(&mut decoder, limits(max_pixels)).map_err(cannot)?;
    Ok(decoder.into_frames().take(2).count() > 1)
}

/// Makes an animated GIF thumbnail of `width` × `height`: every frame resized, the delays kept,
/// at most [`MAX_FRAMES`] frames.
pub fn animated_gif(
    path: &Path,
    max_pixels: u64,
    width: u32,
    height: u32,
    method: Method,
) -> Result<Thumbnail> {
    let mut decoder = GifDecoder::new(open(path)?).map_err(cannot)?;
    image::ImageDecoder::set_limits(&mut decoder, limits(max_pixels)).map_err(cannot)?;
    let mut frames = Vec::new();
    for frame in decoder.into_frames().take(MAX_FRAMES) {
        let frame = frame.map_err(cannot)?;
        let delay = frame.delay();
        let source = DynamicImage::ImageRgba8(frame.into_buffer());
        let resized: RgbaImage = resize(&source, width, height, method).to_rgba8();
        frames.push(Frame::from_parts(resized, 0, 0, delay));
    }
    let mut out = Cursor::new(Vec::new());
    {
        let mut encoder = GifEncoder::new_with_speed(&mut out, 10);
        encoder.set_repeat(Repeat::Infinite).map_err(cannot)?;
        encoder.encode_frames(frames).map_err(cannot)?;
    }
    Ok(Thumbnail {
        bytes: out.into_inner(),
        content_type: "image/gif",
        width,
        height,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dims(plan: Plan) -> (u32, u32) {
        match plan {
            Plan::Resize { width, height } => (width, height),
            Plan::Original => panic!("expected a resize"),
        }
    }

    #[test]
    fn scale_fits_inside_the_box_and_keeps_the_aspect_ratio() {
        assert_eq!(dims(plan((640, 480), 320, 240, Method::Scale)), (320, 240));
        assert_eq!(dims(plan((640, 480), 100, 100, Method::Scale)), (100, 75));
        assert_eq!(dims(plan((480, 640), 100, 100, Method::Scale)), (75, 100));
        // One side fits, the other does not.
        assert_eq!(dims(plan((640, 480), 1000, 240, Method::Scale)), (320, 240));
        // Extreme ratios never reach zero.
        assert_eq!(dims(plan((10000, 1), 100, 100, Method::Scale)), (100, 1));
        assert_eq!(plan((640, 480), 640, 480, Method::Scale), Plan::Original);
        assert_eq!(plan((64, 48), 800, 600, Method::Scale), Plan::Original);
    }

    #[test]
    fn crop_fills_the_box_and_never_exceeds_the_source() {
        assert_eq!(dims(plan((640, 480), 32, 32, Method::Crop)), (32, 32));
        assert_eq!(dims(plan((640, 480), 96, 96, Method::Crop)), (96, 96));
        // Box wider than the source: as wide as the source, the box's aspect ratio.
        assert_eq!(dims(plan((640, 480), 800, 100, Method::Crop)), (640, 80));
        // Box taller than the source.
        assert_eq!(dims(plan((640, 480), 100, 960, Method::Crop)), (50, 480));
        assert_eq!(plan((30, 30), 32, 32, Method::Crop), Plan::Original);
        // Huge boxes cannot overflow.
        assert_eq!(dims(plan((640, 480), u32::MAX, 1, Method::Crop)), (640, 1));
    }

    #[test]
    fn only_image_types_are_thumbnailed() {
        assert_eq!(source_format("image/PNG"), Some(ImageFormat::Png));
        assert_eq!(source_format("image/jpeg; q=1"), Some(ImageFormat::Jpeg));
        assert_eq!(source_format("image/svg+xml"), None);
        assert_eq!(source_format("text/html"), None);
    }
}
