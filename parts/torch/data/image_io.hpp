// trainloop: image files. JPEG through libjpeg-turbo's TurboJPEG API, PNG through libpng: decoders that are libraries
// (the ones Pillow and torchvision use), not code of ours. Pixels come out as Pillow's Image.convert(mode) gives them
// (torchvision's ImageFolder loads with convert("RGB")), as a contiguous uint8 [C, H, W] tensor (PILToTensor's values).
// The decoders are compiled only with TRAINLOOP_WITH_IMAGE_IO=1 (link libturbojpeg and libpng); the mode and the error
// type exist always, so code that names them (the DataLoader's error context) is the same in every translation unit.
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <torch/torch.h>
#include <stdexcept>

TRAINLOOP_DETAIL_BEGIN

/// The channels an image is converted to, as Pillow's Image.convert: "L" (one channel), "RGB", "RGBA".
enum class ImageMode { gray, rgb, rgba };

/// A file that cannot be read, or whose bytes the decoder rejects (truncated, corrupt, not JPEG or PNG). The message
/// names the file and gives the decoder's own.
class ImageDecodeError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

TRAINLOOP_DETAIL_END

#if TRAINLOOP_WITH_IMAGE_IO
#include <png.h>
#include <turbojpeg.h>

#include <cerrno>
#include <csetjmp>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

TRAINLOOP_DETAIL_BEGIN

/// Decodes JPEG or PNG bytes (told apart by their signature) into a uint8 [C, H, W] tensor with mode's channels.
/// `name` is what errors call the bytes (a path). Grayscale, RGB, RGBA, palette and grey+alpha files, any bit depth
/// and interlacing: palette entries and transparency are expanded, 16-bit samples keep their high byte, grey becomes
/// RGB by repetition, alpha is dropped (or 255 added), and colour becomes grey by ITU-R 601-2 luma with Pillow's
/// rounding (L = (19595 R + 38470 G + 7471 B + 32768) >> 16). Where Pillow differs: a 16-bit greyscale PNG
/// (Pillow clips its values at 255 in convert; here the high byte is kept) and CMYK JPEGs (an error here).
TRAINLOOP_DETAIL_API torch::Tensor decode_image(const std::uint8_t* data, std::size_t size, ImageMode mode = ImageMode::rgb,
                                                const std::string& name = "image");
/// Reads and decodes an image file (see decode_image).
TRAINLOOP_DETAIL_API torch::Tensor read_image(const std::string& path, ImageMode mode = ImageMode::rgb);

namespace detail {
// Reads a whole file into `bytes` (reused between calls); throws ImageDecodeError naming the file and errno's text.
TRAINLOOP_DETAIL_API void read_file_into(const std::string& path, std::vector<std::uint8_t>& bytes);
}  // namespace detail

#if TRAINLOOP_DETAIL_DEFINE_API  // compiled once under TRAINLOOP_IMPLEMENTATION; inline in header-only TUs
namespace detail {
// Pillow's luma (Convert.c, L24): the grey value of an RGB pixel, bitwise as Image.convert("L").
inline std::uint8_t pillow_luma(const std::uint8_t* rgb) {
  return static_cast<std::uint8_t>((rgb[0] * 19595u + rgb[1] * 38470u + rgb[2] * 7471u + 0x8000u) >> 16);
}
inline int mode_channels(ImageMode mode) { return mode == ImageMode::gray ? 1 : mode == ImageMode::rgb ? 3 : 4; }
// Decoders write pixels interleaved ([H, W, C]); images leave planar ([C, H, W], contiguous), the layout every later
// op runs fastest on (a crop, flip or normalisation of PILToTensor's strided view costs 3-4x as much). `pixels`
// holds `channels` bytes per pixel; grey output from colour input takes Pillow's luma of the first three.
inline torch::Tensor planar_image(const std::uint8_t* pixels, std::int64_t height, std::int64_t width, int channels, bool to_gray) {
  const std::int64_t count = height * width;
  torch::Tensor out = torch::empty({to_gray ? 1 : channels, height, width}, torch::kUInt8);
  std::uint8_t* plane = out.data_ptr<std::uint8_t>();
  if (to_gray) {
    for (std::int64_t i = 0; i < count; ++i) plane[i] = pillow_luma(pixels + channels * i);
  } else {
    for (int c = 0; c < channels; ++c, plane += count)
      for (std::int64_t i = 0; i < count; ++i) plane[i] = pixels[channels * i + c];
  }
  return out;
}
// The decoders' interleaved output, reused by each thread (a worker decodes file after file).
inline std::vector<std::uint8_t>& interleaved_buffer(std::size_t bytes) {
  thread_local std::vector<std::uint8_t> buffer;
  if (buffer.size() < bytes) buffer.resize(bytes);
  return buffer;
}

// The decompressor of this thread: TurboJPEG handles are not thread-safe, and making one per image costs more than
// decoding a small one.
struct TurboJpegHandle {
  tjhandle handle = tjInitDecompress();
  TurboJpegHandle() = default;
  TurboJpegHandle(const TurboJpegHandle&) = delete;
  TurboJpegHandle& operator=(const TurboJpegHandle&) = delete;
  ~TurboJpegHandle() {
    if (handle) tjDestroy(handle);
  }
  // After a failure: libjpeg-turbo 2.1 can leave a handle unusable for the next file ("Invalid argument").
  void renew() {
    if (handle) tjDestroy(handle);
    handle = tjInitDecompress();
  }
};
inline torch::Tensor decode_jpeg(const std::uint8_t* data, std::size_t size, ImageMode mode, const std::string& name) {
  thread_local TurboJpegHandle turbo;
  auto fail = [&](std::string what) {
    turbo.renew();
    return ImageDecodeError("trainloop: " + name + ": not a valid JPEG file: " + what + " (libjpeg-turbo)");
  };
  if (!turbo.handle) throw fail(tjGetErrorStr2(nullptr));  // out of memory
  auto* bytes = const_cast<unsigned char*>(data);  // TurboJPEG 2.x takes a non-const pointer; it does not write
  const auto length = static_cast<unsigned long>(size);
  int width = 0, height = 0, subsampling = 0, colorspace = 0;
  if (tjDecompressHeader3(turbo.handle, bytes, length, &width, &height, &subsampling, &colorspace) != 0)
    throw fail(tjGetErrorStr2(turbo.handle));
  if (colorspace == TJCS_CMYK || colorspace == TJCS_YCCK)
    throw ImageDecodeError("trainloop: " + name + ": CMYK JPEG files are not supported (convert them to RGB)");
  const bool gray_file = colorspace == TJCS_GRAY;
  // A colour file wanted grey is decoded to RGB and converted as Pillow converts (libjpeg's own grey output is the
  // luma channel, computed before the colour conversion: a level off here and there).
  const bool via_rgb = mode == ImageMode::gray && !gray_file;
  const int channels = via_rgb ? 3 : mode_channels(mode);
  const int format = channels == 1 ? TJPF_GRAY : channels == 3 ? TJPF_RGB : TJPF_RGBA;  // RGBA's alpha is 255
  // One channel goes straight into the image; more are decoded interleaved and made planar.
  torch::Tensor out;
  std::uint8_t* pixels = nullptr;
  if (channels == 1) {
    out = torch::empty({1, height, width}, torch::kUInt8);
    pixels = out.data_ptr<std::uint8_t>();
  } else {
    pixels = interleaved_buffer(static_cast<std::size_t>(width) * height * channels).data();
  }
  // Accurate integer DCT and fancy upsampling (no TJFLAG_FASTDCT, TJFLAG_FASTUPSAMPLE): libjpeg's defaults, which
  // Pillow uses. A warning stops the decoder, so that its message is known: a file that ends early is an error (as in
  // Pillow); other warnings (corrupt but decodable data) are decoded through, as Pillow does.
  auto decompress = [&](int flags) {
    return tjDecompress2(turbo.handle, bytes, length, pixels, width, 0, height, format, flags) == 0;
  };
  if (!decompress(TJFLAG_STOPONWARNING)) {
    const std::string message = tjGetErrorStr2(turbo.handle);
    const bool truncated = message.find("Premature end") != std::string::npos;
    if (tjGetErrorCode(turbo.handle) != TJERR_WARNING || truncated || !decompress(0)) throw fail(message);
  }
  return channels == 1 ? out : planar_image(pixels, height, width, channels, via_rgb);
}

// libpng reports errors by longjmp: the two functions that call it hold only plain data, and the tensor is made
// between them, in C++.
struct PngRead {
  png_structp png = nullptr;
  png_infop info = nullptr;
  const std::uint8_t* data = nullptr;
  std::size_t size = 0, at = 0;
  png_uint_32 width = 0, height = 0;
  int passes = 1, channels = 0;  // channels: after the transforms (3 where grey is computed from RGB)
  bool rgb_to_gray = false;
  char error[256] = {};
};
inline void png_read_from_memory(png_structp png, png_bytep out, png_size_t n) {
  auto* read = static_cast<PngRead*>(png_get_io_ptr(png));
  if (n > read->size - read->at) png_error(png, "the file ends early (truncated)");
  std::memcpy(out, read->data + read->at, n);
  read->at += n;
}
inline void png_record_error(png_structp png, png_const_charp message) {
  auto* read = static_cast<PngRead*>(png_get_error_ptr(png));
  std::snprintf(read->error, sizeof read->error, "%s", message);
  png_longjmp(png, 1);
}
inline void png_ignore_warning(png_structp, png_const_charp) {}  // e.g. a known-incorrect sRGB profile: Pillow ignores them too
// Reads the header and sets the conversions to `mode`; false on error (read.error says why).
inline bool png_start(PngRead& read, ImageMode mode) {
  read.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &read, png_record_error, png_ignore_warning);
  if (read.png) read.info = png_create_info_struct(read.png);
  if (!read.info) {
    std::snprintf(read.error, sizeof read.error, "out of memory");
    return false;
  }
  if (setjmp(png_jmpbuf(read.png))) return false;
  png_set_read_fn(read.png, &read, png_read_from_memory);
  png_read_info(read.png, read.info);
  const int color = png_get_color_type(read.png, read.info);
  const bool has_color = (color & PNG_COLOR_MASK_COLOR) != 0;
  png_set_strip_16(read.png);               // Pillow keeps the high byte of 16-bit colour samples
  png_set_packing(read.png);                // 1, 2, 4-bit samples to bytes ...
  png_set_expand_gray_1_2_4_to_8(read.png); // ... scaled to 0..255
  if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(read.png);
  if (mode == ImageMode::rgba) {
    if (png_get_valid(read.png, read.info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(read.png);
    if (!has_color) png_set_gray_to_rgb(read.png);
    png_set_add_alpha(read.png, 0xFF, PNG_FILLER_AFTER);  // only where no alpha came from the file
  } else {
    png_set_strip_alpha(read.png);  // Pillow drops alpha (and ignores tRNS) converting to "RGB" or "L"
    if (mode == ImageMode::rgb && !has_color) png_set_gray_to_rgb(read.png);
    read.rgb_to_gray = mode == ImageMode::gray && has_color;
  }
  read.passes = png_set_interlace_handling(read.png);
  png_read_update_info(read.png, read.info);
  read.width = png_get_image_width(read.png, read.info);
  read.height = png_get_image_height(read.png, read.info);
  read.channels = png_get_channels(read.png, read.info);
  return true;
}
// Decodes the rows into `pixels` (height x width x channels bytes); false on error.
inline bool png_finish(PngRead& read, std::uint8_t* pixels) {
  if (setjmp(png_jmpbuf(read.png))) return false;
  const std::size_t row_bytes = static_cast<std::size_t>(read.width) * read.channels;
  for (int pass = 0; pass < read.passes; ++pass)  // an interlaced file refines the same rows pass after pass
    for (png_uint_32 y = 0; y < read.height; ++y) png_read_row(read.png, pixels + y * row_bytes, nullptr);
  return true;
}
inline torch::Tensor decode_png(const std::uint8_t* data, std::size_t size, ImageMode mode, const std::string& name) {
  PngRead read;
  read.data = data;
  read.size = size;
  struct Release {  // destroys libpng's state however this function is left
    PngRead& read;
    ~Release() { png_destroy_read_struct(&read.png, &read.info, nullptr); }
  } release{read};
  auto fail = [&] { return ImageDecodeError("trainloop: " + name + ": not a valid PNG file: " + read.error + " (libpng)"); };
  if (!png_start(read, mode)) throw fail();
  const auto height = static_cast<std::int64_t>(read.height), width = static_cast<std::int64_t>(read.width);
  if (read.channels == 1) {  // straight into the image
    torch::Tensor out = torch::empty({1, height, width}, torch::kUInt8);
    if (!png_finish(read, out.data_ptr<std::uint8_t>())) throw fail();
    return out;
  }
  std::uint8_t* pixels = interleaved_buffer(static_cast<std::size_t>(height * width * read.channels)).data();
  if (!png_finish(read, pixels)) throw fail();
  return planar_image(pixels, height, width, read.channels, read.rgb_to_gray);
}
}  // namespace detail

TRAINLOOP_DETAIL_API torch::Tensor decode_image(const std::uint8_t* data, std::size_t size, ImageMode mode, const std::string& name) {
  static const std::uint8_t png_signature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  if (size >= 8 && std::memcmp(data, png_signature, 8) == 0) return detail::decode_png(data, size, mode, name);
  if (size >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF) return detail::decode_jpeg(data, size, mode, name);
  throw ImageDecodeError("trainloop: " + name + ": neither a JPEG nor a PNG file (" +
                         (size == 0 ? std::string("it is empty") : "unknown signature") + ")");
}

TRAINLOOP_DETAIL_API void detail::read_file_into(const std::string& path, std::vector<std::uint8_t>& bytes) {
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (!file) throw ImageDecodeError("trainloop: cannot open " + path + ": " + std::strerror(errno));
  long size = -1;
  if (std::fseek(file, 0, SEEK_END) == 0) size = std::ftell(file);
  std::size_t got = 0;
  if (size >= 0 && std::fseek(file, 0, SEEK_SET) == 0) {
    bytes.resize(static_cast<std::size_t>(size));
    got = std::fread(bytes.data(), 1, bytes.size(), file);
  }
  const int error = errno;
  std::fclose(file);
  if (size < 0 || got != bytes.size())
    throw ImageDecodeError("trainloop: cannot read " + path + ": " + (error ? std::strerror(error) : "it changed while read"));
}

TRAINLOOP_DETAIL_API torch::Tensor read_image(const std::string& path, ImageMode mode) {
  thread_local std::vector<std::uint8_t> bytes;  // reused: a worker reads file after file
  detail::read_file_into(path, bytes);
  return decode_image(bytes.data(), bytes.size(), mode, path);
}
#endif  // TRAINLOOP_DETAIL_DEFINE_API

TRAINLOOP_DETAIL_END
#endif  // TRAINLOOP_WITH_IMAGE_IO
