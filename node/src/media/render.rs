//! Thumbnails, as the spec's content repository module asks: `scale` keeps the aspect ratio and
//! fits the image in the box, `crop` fills the box and cuts what overflows. A thumbnail is never
//! smaller than asked for and never upscaled: content smaller than the box is served as it is.
//! Requests map onto the spec's recommended sizes where one fits, so a few cached files serve
//! every client; those sizes are made when an image is uploaded.
//!
//! Only images are thumbnailed, by what their bytes are (not what the uploader claimed);
//! anything else gets an error, never the original file.

use std::io::Cursor;

use image::{
    AnimationDecoder, DynamicImage, Frame, GenericImageView, ImageDecoder, ImageFormat, ImageReader, Limits,
    codecs::{
        gif::{GifDecoder, GifEncoder, Repeat},
        jpeg::JpegEncoder,
    },
    imageops::FilterType,
};
use ruma::media::Method;

/// Sizes the spec recommends, made at upload.
pub const RECOMMENDED: [Target; 5] = [
    Target { width: 32, height: 32, crop: true },
    Target { width: 96, height: 96, crop: true },
    Target { width: 320, height: 240, crop: false },
    Target { width: 640, height: 480, crop: false },
    Target { width: 800, height: 600, crop: false },
];

/// Decoding stops beyond these: a small file that claims to be a huge image must not exhaust
/// memory (a decompression bomb).
const MAX_DIMENSION: u32 = 16_384;
const MAX_DECODE_BYTES: u64 = 512 * 1024 * 1024;
/// Animated thumbnails keep at most this many frames.
const MAX_FRAMES: usize = 300;
/// JPEG quality of photo thumbnails: small files, no visible blocks at thumbnail size.
const JPEG_QUALITY: u8 = 75;

/// The box a thumbnail is made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Target {
    pub width: u32,
    pub height: u32,
    pub crop: bool,
}

impl Target {
    /// The box to make for a request: the smallest recommended size of the same method that
    /// is at least as large (and, for `crop`, of the same shape), else exactly what was asked.
    pub fn for_request(width: u32, height: u32, method: Option<&Method>) -> Result<Self, ThumbnailError> {
        if width == 0 || height == 0 {
            return Err(ThumbnailError::BadSize);
        }
        let crop = matches!(method, Some(Method::Crop));
        let fits = |t: &&Target| {
            t.crop == crop
                && t.width >= width
                && t.height >= height
                && (!crop || u64::from(t.width) * u64::from(height) == u64::from(t.height) * u64::from(width))
        };
        Ok(RECOMMENDED.iter().find(fits).copied().unwrap_or(Target { width, height, crop }))
    }

    /// A stable name for the cached file of this box.
    pub fn key(&self, animated: bool) -> String {
        let method = if self.crop { "crop" } else { "scale" };
        format!("{}x{}-{method}{}", self.width, self.height, if animated { "-animated" } else { "" })
    }
}

/// Why there is no thumbnail.
#[derive(Debug, thiserror::Error)]
pub enum ThumbnailError {
    #[error("this media is not an image this server can thumbnail (JPEG, PNG, GIF or WebP)")]
    NotAnImage,
    #[error("width and height must be at least 1")]
    BadSize,
    #[error("the image cannot be decoded: {0}")]
    Undecodable(image::ImageError),
    #[error("the thumbnail cannot be encoded: {0}")]
    Encode(image::ImageError),
}

/// What a request gets.
#[derive(Debug)]
pub enum Rendered {
    /// The content already fits the box: serve it as it is (the spec forbids upscaling).
    Original,
    Image {
        bytes: Vec<u8>,
        content_type: &'static str,
    },
}

fn limits() -> Limits {
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_DIMENSION);
    limits.max_image_height = Some(MAX_DIMENSION);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    limits
}

/// What the bytes are, if they are an image this server thumbnails.
fn image_format(bytes: &[u8]) -> Result<ImageFormat, ThumbnailError> {
    match image::guess_format(bytes) {
        Ok(format @ (ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::Gif | ImageFormat::WebP)) => Ok(format),
        _ => Err(ThumbnailError::NotAnImage),
    }
}

fn decode(bytes: &[u8], format: ImageFormat) -> Result<DynamicImage, ThumbnailError> {
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    reader.limits(limits());
    reader.decode().map_err(ThumbnailError::Undecodable)
}

fn still(image: &DynamicImage, target: Target) -> Result<Rendered, ThumbnailError> {
    let Some((width, height)) = output_size(image.dimensions(), target) else { return Ok(Rendered::Original) };
    let thumb =
        if target.crop { crop(image, width, height) } else { image.resize(width, height, FilterType::Triangle) };
    encode(&thumb)
}

/// Makes the thumbnail of `bytes` for `target`. CPU-bound: call it off the async runtime.
pub fn render(bytes: &[u8], target: Target, animated: bool) -> Result<Rendered, ThumbnailError> {
    let format = image_format(bytes)?;
    if animated
        && format == ImageFormat::Gif
        && let Some(rendered) = render_animated_gif(bytes, target)?
    {
        return Ok(rendered);
    }
    still(&decode(bytes, format)?, target)
}

/// Still thumbnails for several boxes from one decode (the recommended sizes at upload).
pub fn render_all(bytes: &[u8], targets: &[Target]) -> Result<Vec<(Target, Rendered)>, ThumbnailError> {
    let image = decode(bytes, image_format(bytes)?)?;
    targets.iter().map(|&target| Ok((target, still(&image, target)?))).collect()
}

/// The size of the thumbnail of an image of `original` size, or `None` when the original
/// already fits in the box.
fn output_size(original: (u32, u32), target: Target) -> Option<(u32, u32)> {
    let (ow, oh) = original;
    if ow <= target.width && oh <= target.height {
        return None;
    }
    Some((target.width.min(ow), target.height.min(oh)))
}

/// Fills `width`×`height` from the centre of `image`. Where the original is smaller than the
/// box on one side, cuts it to the box's shape without scaling (never upscale).
fn crop(image: &DynamicImage, width: u32, height: u32) -> DynamicImage {
    let (ow, oh) = image.dimensions();
    if ow >= width && oh >= height {
        return image.resize_to_fill(width, height, FilterType::Triangle);
    }
    image.crop_imm((ow - width.min(ow)) / 2, (oh - height.min(oh)) / 2, width.min(ow), height.min(oh))
}

/// Opaque images as JPEG (small), images with transparency as PNG.
fn encode(image: &DynamicImage) -> Result<Rendered, ThumbnailError> {
    let mut out = Vec::new();
    let transparent = image.color().has_alpha() && image.to_rgba8().pixels().any(|p| p.0[3] < u8::MAX);
    if transparent {
        image.write_to(&mut Cursor::new(&mut out), ImageFormat::Png).map_err(ThumbnailError::Encode)?;
        return Ok(Rendered::Image { bytes: out, content_type: "image/png" });
    }
    let rgb = DynamicImage::ImageRgb8(image.to_rgb8());
    JpegEncoder::new_with_quality(&mut out, JPEG_QUALITY).encode_image(&rgb).map_err(ThumbnailError::Encode)?;
    Ok(Rendered::Image { bytes: out, content_type: "image/jpeg" })
}

/// Every frame scaled to the box, as an animated GIF; `None` for a GIF of one frame (the
/// static path serves it).
fn render_animated_gif(bytes: &[u8], target: Target) -> Result<Option<Rendered>, ThumbnailError> {
    let mut decoder = GifDecoder::new(Cursor::new(bytes)).map_err(ThumbnailError::Undecodable)?;
    decoder.set_limits(limits()).map_err(ThumbnailError::Undecodable)?;
    let (ow, oh) = decoder.dimensions();
    let frames: Vec<Frame> =
        decoder.into_frames().take(MAX_FRAMES).collect::<Result<_, _>>().map_err(ThumbnailError::Undecodable)?;
    if frames.len() < 2 {
        return Ok(None);
    }
    let Some((width, height)) = output_size((ow, oh), target) else { return Ok(Some(Rendered::Original)) };
    let scaled = frames.into_iter().map(|frame| {
        let delay = frame.delay();
        let image = DynamicImage::ImageRgba8(frame.into_buffer());
        let thumb =
            if target.crop { crop(&image, width, height) } else { image.resize(width, height, FilterType::Triangle) };
        Frame::from_parts(thumb.to_rgba8(), 0, 0, delay)
    });
    let mut out = Vec::new();
    {
        let mut encoder = GifEncoder::new(&mut out);
        encoder.set_repeat(Repeat::Infinite).map_err(ThumbnailError::Encode)?;
        encoder.encode_frames(scaled).map_err(ThumbnailError::Encode)?;
    }
    Ok(Some(Rendered::Image { bytes: out, content_type: "image/gif" }))
}

#[cfg(test)]
mod tests {
    use image::{ImageBuffer, Rgb, Rgba};

    use super::*;

    fn png(width: u32, height: u32) -> Vec<u8> {
        let img = ImageBuffer::from_fn(width, height, |x, y| Rgb([(x % 256) as u8, (y % 256) as u8, 90]));
        let mut out = Vec::new();
        DynamicImage::ImageRgb8(img).write_to(&mut Cursor::new(&mut out), ImageFormat::Png).unwrap();
        out
    }

    fn dims(rendered: Rendered) -> (u32, u32, &'static str) {
        let Rendered::Image { bytes, content_type } = rendered else { panic!("expected a thumbnail") };
        let (w, h) = image::load_from_memory(&bytes).unwrap().dimensions();
        (w, h, content_type)
    }

    #[test]
    fn requests_map_onto_recommended_sizes() {
        let scale = Method::Scale;
        let crop = Method::Crop;
        assert_eq!(Target::for_request(300, 200, Some(&scale)).unwrap(), RECOMMENDED[2]);
        assert_eq!(Target::for_request(641, 10, Some(&scale)).unwrap(), RECOMMENDED[4]);
        assert_eq!(Target::for_request(40, 40, Some(&crop)).unwrap(), RECOMMENDED[1]);
        // A crop of another shape is made exactly.
        assert_eq!(Target::for_request(64, 32, Some(&crop)).unwrap(), Target { width: 64, height: 32, crop: true });
        assert_eq!(Target::for_request(2000, 2000, None).unwrap(), Target { width: 2000, height: 2000, crop: false });
        assert!(matches!(Target::for_request(0, 10, None), Err(ThumbnailError::BadSize)));
    }

    #[test]
    fn scale_keeps_the_aspect_ratio_and_fills_one_side() {
        let (w, h, kind) = dims(render(&png(1600, 800), RECOMMENDED[3], false).unwrap());
        assert_eq!((w, h, kind), (640, 320, "image/jpeg"));
    }

    #[test]
    fn crop_gives_the_exact_box() {
        let (w, h, _) = dims(render(&png(1600, 800), RECOMMENDED[1], false).unwrap());
        assert_eq!((w, h), (96, 96));
    }

    #[test]
    fn never_upscales() {
        assert!(matches!(render(&png(20, 20), RECOMMENDED[1], false).unwrap(), Rendered::Original));
        // Taller than the box but narrower: cut to the box's height, not scaled up.
        let (w, h, _) = dims(render(&png(50, 300), RECOMMENDED[1], false).unwrap());
        assert_eq!((w, h), (50, 96));
    }

    #[test]
    fn transparency_is_kept_as_png() {
        let img = ImageBuffer::from_fn(400, 400, |x, _| Rgba([0, 0, 0, (x % 256) as u8]));
        let mut bytes = Vec::new();
        DynamicImage::ImageRgba8(img).write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png).unwrap();
        assert_eq!(dims(render(&bytes, RECOMMENDED[1], false).unwrap()).2, "image/png");
    }

    #[test]
    fn anything_else_is_refused() {
        for bytes in [&b"%PDF-1.7 not an image"[..], b"<svg xmlns='http://www.w3.org/2000/svg'/>", b""] {
            assert!(matches!(render(bytes, RECOMMENDED[0], false), Err(ThumbnailError::NotAnImage)));
        }
        // The right magic number and nothing after it.
        assert!(matches!(render(b"\x89PNG\r\n\x1a\n", RECOMMENDED[0], false), Err(ThumbnailError::Undecodable(_))));
    }

    #[test]
    fn animated_gifs_stay_animated_only_when_asked() {
        let frames = (0..3u8).map(|i| {
            let buf = ImageBuffer::from_pixel(200, 100, Rgba([i * 80, 0, 0, 255]));
            Frame::from_parts(buf, 0, 0, image::Delay::from_numer_denom_ms(100, 1))
        });
        let mut gif = Vec::new();
        {
            let mut encoder = GifEncoder::new(&mut gif);
            encoder.encode_frames(frames).unwrap();
        }
        let Rendered::Image { bytes, content_type } = render(&gif, RECOMMENDED[1], true).unwrap() else { panic!() };
        assert_eq!(content_type, "image/gif");
        let count = GifDecoder::new(Cursor::new(&bytes)).unwrap().into_frames().count();
        assert_eq!(count, 3, "all frames kept");
        let (_, _, kind) = dims(render(&gif, RECOMMENDED[1], false).unwrap());
        assert_eq!(kind, "image/jpeg", "not asked to animate: a still (opaque, so JPEG)");
    }
}
