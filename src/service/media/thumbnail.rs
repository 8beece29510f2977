//! Thumbnails: the size arithmetic (pure) and the image work (blocking; run it on the blocking
//! pool). JPEG, PNG, GIF and WebP sources; JPEG thumbnails of JPEG sources, PNG of the others,
//! and animated GIF thumbnails of animated GIFs when asked for.
//!
//! Requested sizes are first snapped down to a fixed set ([`snap`]), so that each media item has
//! a bounded number of cached thumbnails; a snapped box is never larger than the one asked for.
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
use image::{
    AnimationDecoder, DynamicImage, Frame, ImageDecoder, ImageFormat, ImageReader, Limits,
    RgbaImage,
};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The most frames an animated thumbnail keeps (the rest of a longer animation is cut).
pub const MAX_FRAMES: u64 = 300;
/// The most pixels an animated thumbnail may have in all (frames × width × height); an
/// animation that needs more gets a still thumbnail.
pub const MAX_ANIMATED_OUTPUT_PIXELS: u64 = 64 << 20;
/// The most source pixels decoding an animation for a thumbnail may produce (frames × the
/// GIF's logical screen, at which every frame is decoded); an animation that needs more gets a
/// still thumbnail.
pub const MAX_ANIMATED_DECODE_PIXELS: u64 = 256 << 20;
/// The sizes a requested dimension above the smallest of them is snapped down to.
pub const SIZES: [u32; 11] = [32, 96, 240, 320, 480, 600, 640, 800, 1024, 1280, 1600];
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

/// Snaps a requested dimension down to the largest of [`SIZES`] not above it (so at most the
/// largest of them); dimensions up to the smallest of them stay as they are. Never larger than
/// `requested`, and never 0.
pub fn snap(requested: u32) -> u32 {
    if requested <= SIZES[0] {
        return requested.max(1);
    }
    SIZES
        .iter()
        .copied()
        .rev()
        .find(|&size| size <= requested)
        .unwrap_or(SIZES[0])
}

/// How many frames of an animation whose frames are `source` pixels an animated thumbnail of
/// `output` pixels may have: at most [`MAX_FRAMES`], within [`MAX_ANIMATED_OUTPUT_PIXELS`] in
/// all, and within [`MAX_ANIMATED_DECODE_PIXELS`] decoded.
pub fn animated_frame_limit(source: (u32, u32), output: (u32, u32)) -> u64 {
    let pixels = |(w, h): (u32, u32)| u64::from(w.max(1)) * u64::from(h.max(1));
    let by_output = MAX_ANIMATED_OUTPUT_PIXELS / pixels(output);
    let by_decode = MAX_ANIMATED_DECODE_PIXELS / pixels(source);
    MAX_FRAMES.min(by_output).min(by_decode)
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

/// How many frames a GIF has, counting up to `up_to`: reads the frame descriptors only,
/// skipping the image data undecoded.
pub fn count_gif_frames(path: &Path, up_to: u64) -> Result<u64> {
    let mut options = gif::DecodeOptions::new();
    options.skip_frame_decoding(true);
    let mut decoder = options.read_info(open(path)?).map_err(cannot)?;
    let mut count = 0;
    while count < up_to && decoder.next_frame_info().map_err(cannot)?.is_some() {
        count += 1;
    }
    Ok(count)
}

/// Whether a GIF has more than one frame (counted, not decoded).
pub fn is_animated_gif(path: &Path) -> Result<bool> {
    Ok(count_gif_frames(path, 2)? > 1)
}

/// Makes an animated GIF thumbnail of `width` × `height`: every frame resized, the delays kept,
/// at most [`MAX_FRAMES`] frames (a longer animation is cut). Frames are decoded, resized and
/// encoded one at a time, never collected. `None`, before anything is decoded, when the
/// animation has more frames than [`animated_frame_limit`] allows below [`MAX_FRAMES`] (too many
/// for its size): make a still thumbnail instead.
pub fn animated_gif(
    path: &Path,
    max_pixels: u64,
    width: u32,
    height: u32,
    method: Method,
) -> Result<Option<Thumbnail>> {
    let mut decoder = GifDecoder::new(open(path)?).map_err(cannot)?;
    decoder.set_limits(limits(max_pixels)).map_err(cannot)?;
    let limit = animated_frame_limit(decoder.dimensions(), (width, height));
    if limit < 2 || (limit < MAX_FRAMES && count_gif_frames(path, limit + 1)? > limit) {
        return Ok(None);
    }
    let frames = decoder.into_frames();
    let mut out = Cursor::new(Vec::new());
    {
        let mut encoder = GifEncoder::new_with_speed(&mut out, 10);
        encoder.set_repeat(Repeat::Infinite).map_err(cannot)?;
        // Counted above, but the decoder is the judge of what it decodes.
        for frame in frames.take(usize::try_from(limit).unwrap_or(usize::MAX)) {
            let frame = frame.map_err(cannot)?;
            let delay = frame.delay();
            let source = DynamicImage::ImageRgba8(frame.into_buffer());
            let resized: RgbaImage = resize(&source, width, height, method).to_rgba8();
            drop(source);
            encoder
                .encode_frame(Frame::from_parts(resized, 0, 0, delay))
                .map_err(cannot)?;
        }
    }
    Ok(Some(Thumbnail {
        bytes: out.into_inner(),
        content_type: "image/gif",
        width,
        height,
    }))
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
    fn requested_sizes_are_snapped_down_to_a_fixed_set() {
        for (asked, want) in [
            (1, 1),
            (0, 1),
            (17, 17),
            (32, 32),
            (33, 32),
            (95, 32),
            (96, 96),
            (100, 96),
            (300, 240),
            (320, 320),
            (500, 480),
            (639, 600),
            (1000, 800),
            (1599, 1280),
            (1600, 1600),
            (5999, 1600),
            (u32::MAX, 1600),
        ] {
            assert_eq!(snap(asked), want, "{asked}");
        }
        // Never larger than asked, and a bounded number of distinct values.
        let mut seen = std::collections::BTreeSet::new();
        for asked in 1..=5000 {
            let snapped = snap(asked);
            assert!(snapped <= asked && snapped >= 1);
            seen.insert(snapped);
        }
        assert_eq!(seen.len(), 32 + SIZES.len() - 1);
    }

    #[test]
    fn animated_thumbnails_have_a_pixel_budget() {
        // Small animations: the frame cap.
        assert_eq!(animated_frame_limit((200, 100), (32, 16)), MAX_FRAMES);
        // Large output frames: within the output budget.
        let limit = animated_frame_limit((1600, 1600), (1600, 1600));
        assert!(limit * 1600 * 1600 <= MAX_ANIMATED_OUTPUT_PIXELS && limit >= 2);
        // A huge logical screen: within the decode budget.
        let limit = animated_frame_limit((6000, 6000), (32, 32));
        assert!(limit * 6000 * 6000 <= MAX_ANIMATED_DECODE_PIXELS && limit >= 2);
        // The review's case (6000×6000 screen, 5999×5999 asked): far below 43 GB.
        let out = (snap(5999), snap(5999));
        let limit = animated_frame_limit((6000, 6000), out);
        assert!(limit * u64::from(out.0) * u64::from(out.1) * 4 <= 256 << 20);
        // Extreme sizes do not overflow and give no animation.
        assert_eq!(animated_frame_limit((u32::MAX, u32::MAX), (1, 1)), 0);
    }

    #[test]
    fn only_image_types_are_thumbnailed() {
        assert_eq!(source_format("image/PNG"), Some(ImageFormat::Png));
        assert_eq!(source_format("image/jpeg; q=1"), Some(ImageFormat::Jpeg));
        assert_eq!(source_format("image/svg+xml"), None);
        assert_eq!(source_format("text/html"), None);
    }
}
