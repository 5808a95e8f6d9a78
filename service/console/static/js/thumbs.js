// Thumbnails of items: the stored image, or a vector drawn as the image it stands for when the
// model reads images (digits are 8x8 pixels given as 64 values in 0..max_value).
import { h } from "./dom.js";

/** The media type of a base64 image file, from its first bytes. */
function imageType(b64) {
  if (b64.startsWith("/9j/")) return "image/jpeg";
  if (b64.startsWith("R0lGOD")) return "image/gif";
  if (b64.startsWith("UklGR")) return "image/webp";
  return "image/png";
}

/** A data: URL drawing a flat C*H*W vector (row-major, values in 0..maxValue), or null. */
export function vectorImageUrl(values, spec) {
  if (!spec || spec.kind !== "image") return null;
  const { channels, height, width } = spec;
  const max = spec.max_value || 255;
  if (values.length !== channels * height * width) return null;
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext("2d");
  const pixels = ctx.createImageData(width, height);
  const plane = width * height;
  for (let i = 0; i < plane; i++) {
    for (let c = 0; c < 3; c++) {
      const v = values[(channels === 3 ? c : 0) * plane + i];
      pixels.data[i * 4 + c] = Math.max(0, Math.min(255, Math.round((v / max) * 255)));
    }
    pixels.data[i * 4 + 3] = 255;
  }
  ctx.putImageData(pixels, 0, 0);
  return canvas.toDataURL("image/png");
}

/** An <img> for an item's stored input ({"image": b64} or {"vector": [...]}), or a placeholder. */
export function thumbnail(input, spec, alt) {
  let src = null;
  if (input && typeof input.image === "string") src = `data:${imageType(input.image)};base64,${input.image}`;
  else if (input && Array.isArray(input.vector)) src = vectorImageUrl(input.vector, spec);
  if (!src) {
    const dim = input && Array.isArray(input.vector) ? `${input.vector.length}-d` : "—";
    return h("span", { class: "thumb thumb-none", title: alt }, dim);
  }
  return h("img", { class: "thumb", src, alt, width: 48, height: 48 });
}

/** Read a File as a data: URL (what /embed accepts for "image"). */
export function readAsDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}
