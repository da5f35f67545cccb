#pragma once
// One pair's IoU / GIoU / DIoU / CIoU from the per-box fields (boxes.h), shared by the CPU and CUDA
// kernels, with torchvision's formulas and operation order so the values match it.
#include <c10/macros/Macros.h>

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "boxes/boxes.h"

namespace cvops::boxes {

constexpr double kFourOverPiSquared = 0.40528473456935108578;  // 4/π², CIoU's aspect term

// IouEps (boxes.h) in the compute type.
template <typename T>
struct Eps {
  T uni, enclosure, diagonal, alpha;
  bool clamp_enclosure;
};

template <typename T>
Eps<T> eps_in(const IouEps& e) {
  return {static_cast<T>(e.uni), static_cast<T>(e.enclosure), static_cast<T>(e.diagonal),
          static_cast<T>(e.alpha), e.clamp_enclosure};
}

// An enclosing box's side: clamped at 0 (torchvision's pairwise forms) or not (its loss forms).
template <typename T>
C10_HOST_DEVICE C10_ALWAYS_INLINE T enclosing_side(T side, bool clamp) {
  return clamp ? std::max(side, T(0)) : side;
}

// The per-box fields (the columns of box_fields) of one box.
template <typename T>
struct Box {
  T x1, y1, x2, y2, area, cx, cy, aspect;
};

template <IouKind kind, typename T>
C10_HOST_DEVICE C10_ALWAYS_INLINE T pair_value(const Box<T>& a, const Box<T>& b, const Eps<T>& e) {
  const T iw = std::max(std::min(a.x2, b.x2) - std::max(a.x1, b.x1), T(0));
  const T ih = std::max(std::min(a.y2, b.y2) - std::max(a.y1, b.y1), T(0));
  const T inter = iw * ih;
  const T uni = a.area + b.area - inter;
  const T iou = inter / (uni + e.uni);
  if constexpr (kind == IouKind::kIou) return iou;
  const T cw = enclosing_side(std::max(a.x2, b.x2) - std::min(a.x1, b.x1), e.clamp_enclosure);
  const T ch = enclosing_side(std::max(a.y2, b.y2) - std::min(a.y1, b.y1), e.clamp_enclosure);
  if constexpr (kind == IouKind::kGiou) {
    const T enclosing = cw * ch;
    return iou - (enclosing - uni) / (enclosing + e.enclosure);
  }
  const T dx = a.cx - b.cx, dy = a.cy - b.cy;
  const T diou = iou - (dx * dx + dy * dy) / (cw * cw + ch * ch + e.diagonal);
  if constexpr (kind == IouKind::kDiou) return diou;
  const T d = a.aspect - b.aspect;
  const T v = T(kFourOverPiSquared) * (d * d);
  return diou - v / (T(1) - iou + v + e.alpha) * v;
}

// Box i of an array of per-box field rows [n, kBoxFields].
template <typename T>
C10_HOST_DEVICE C10_ALWAYS_INLINE Box<T> box_at(const T* rows, int64_t i) {
  const T* f = rows + i * kBoxFields;
  return {f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7]};
}

// Box j of field-major fields [kBoxFields, n].
template <typename T>
C10_HOST_DEVICE C10_ALWAYS_INLINE Box<T> box_at_column(const T* fields, int64_t n, int64_t j) {
  return {fields[j],         fields[n + j],     fields[2 * n + j], fields[3 * n + j],
          fields[4 * n + j], fields[5 * n + j], fields[6 * n + j], fields[7 * n + j]};
}


// ---- element-wise pairs (box_iou_aligned) and their gradient -------------------------------

template <typename T>
struct Corners {
  T x1, y1, x2, y2;
};

// Corners of a box given as 4 values in `fmt`, as torchvision forms them.
template <typename T>
C10_HOST_DEVICE C10_ALWAYS_INLINE Corners<T> to_corners(const T* v, BoxFormat fmt) {
  if (fmt == BoxFormat::kXyxy) return {v[0], v[1], v[2], v[3]};
  if (fmt == BoxFormat::kXywh) return {v[0], v[1], v[0] + v[2], v[1] + v[3]};
  return {v[0] - v[2] / 2, v[1] - v[3] / 2, v[0] + v[2] / 2, v[1] + v[3] / 2};
}

template <typename T>
C10_HOST_DEVICE C10_ALWAYS_INLINE Box<T> box_of(const T* v, BoxFormat fmt) {
  const Corners<T> c = to_corners(v, fmt);
  const T area = fmt == BoxFormat::kXyxy ? (c.x2 - c.x1) * (c.y2 - c.y1) : v[2] * v[3];
  return {c.x1,
          c.y1,
          c.x2,
          c.y2,
          area,
          (c.x1 + c.x2) / 2,
          (c.y1 + c.y2) / 2,
          static_cast<T>(atan((c.x2 - c.x1) / (c.y2 - c.y1)))};
}

// d max(p, q) / dp, with ties split in half as torch.maximum's gradient does.
template <typename T>
C10_HOST_DEVICE C10_ALWAYS_INLINE T share_of_max(T p, T q) {
  return p > q ? T(1) : (p == q ? T(0.5) : T(0));
}

// Gradient of pair_value<kind>(a, b) times g with respect to both boxes' corners. CIoU holds its
// trade-off α constant, as torchvision computes it under no_grad.
template <IouKind kind, typename T>
C10_HOST_DEVICE void pair_grad(const Box<T>& a, const Box<T>& b, const Eps<T>& e, T g,
                               Corners<T>& ga, Corners<T>& gb) {
  // Forward quantities.
  const T lx = std::max(a.x1, b.x1), rx = std::min(a.x2, b.x2);
  const T ly = std::max(a.y1, b.y1), ry = std::min(a.y2, b.y2);
  const T iw = std::max(rx - lx, T(0)), ih = std::max(ry - ly, T(0));
  const T inter = iw * ih, uni = a.area + b.area - inter, uni_e = uni + e.uni;
  const T iou = inter / uni_e;
  const T ex1 = std::min(a.x1, b.x1), ex2 = std::max(a.x2, b.x2);
  const T ey1 = std::min(a.y1, b.y1), ey2 = std::max(a.y2, b.y2);
  const T cw = enclosing_side(ex2 - ex1, e.clamp_enclosure);
  const T ch = enclosing_side(ey2 - ey1, e.clamp_enclosure);
  // Reverse pass: g_* is d(out)/d(*) times g.
  T g_iou = g, g_uni = 0, g_cw = 0, g_ch = 0;
  T g_acx = 0, g_acy = 0, g_aw = 0, g_ah = 0, g_bw = 0, g_bh = 0;  // centres and aspect terms
  if constexpr (kind == IouKind::kGiou) {  // giou = iou − (C − uni) / (C + eps)
    const T c = cw * ch, c_e = c + e.enclosure;
    g_uni += g / c_e;
    const T g_c = -g * (uni + e.enclosure) / (c_e * c_e);
    g_cw += g_c * ch;
    g_ch += g_c * cw;
  }
  if constexpr (kind == IouKind::kDiou || kind == IouKind::kCiou) {  // − ρ² / (c² + eps)
    const T dx = a.cx - b.cx, dy = a.cy - b.cy;
    const T diag = cw * cw + ch * ch + e.diagonal;
    const T rho = dx * dx + dy * dy;
    g_acx = -g * 2 * dx / diag;
    g_acy = -g * 2 * dy / diag;
    const T g_diag = g * rho / (diag * diag);
    g_cw += g_diag * 2 * cw;
    g_ch += g_diag * 2 * ch;
  }
  if constexpr (kind == IouKind::kCiou) {  // − α·v, v = 4/π²·(atan(wa/ha) − atan(wb/hb))²
    const T d = a.aspect - b.aspect;
    const T v = T(kFourOverPiSquared) * (d * d);
    const T alpha = v / (T(1) - iou + v + e.alpha);
    const T g_d = -g * alpha * T(kFourOverPiSquared) * 2 * d;
    const T aw = a.x2 - a.x1, ah = a.y2 - a.y1, bw = b.x2 - b.x1, bh = b.y2 - b.y1;
    g_aw = g_d * ah / (aw * aw + ah * ah);
    g_ah = -g_d * aw / (aw * aw + ah * ah);
    g_bw = -g_d * bh / (bw * bw + bh * bh);
    g_bh = g_d * bw / (bw * bw + bh * bh);
  }
  // iou = inter / (uni + eps), uni = area_a + area_b − inter.
  g_uni += -g_iou * iou / uni_e;
  const T g_inter = g_iou / uni_e - g_uni;
  const T g_area = g_uni;  // for both boxes
  // clamp(min = 0) passes the gradient where its input >= 0, as torch's does.
  const T g_iw = rx - lx >= T(0) ? g_inter * ih : T(0);
  const T g_ih = ry - ly >= T(0) ? g_inter * iw : T(0);
  const T ecw = !e.clamp_enclosure || ex2 - ex1 >= T(0) ? g_cw : T(0);
  const T ech = !e.clamp_enclosure || ey2 - ey1 >= T(0) ? g_ch : T(0);
  // Corners: intersection, enclosure, areas, centres and aspect terms.
  const T ah = a.y2 - a.y1, aw = a.x2 - a.x1, bh = b.y2 - b.y1, bw = b.x2 - b.x1;
  ga.x2 = g_iw * share_of_max(-a.x2, -b.x2) + ecw * share_of_max(a.x2, b.x2) + g_area * ah +
          g_acx / 2 + g_aw;
  gb.x2 = g_iw * share_of_max(-b.x2, -a.x2) + ecw * share_of_max(b.x2, a.x2) + g_area * bh -
          g_acx / 2 + g_bw;
  ga.x1 = -g_iw * share_of_max(a.x1, b.x1) - ecw * share_of_max(-a.x1, -b.x1) - g_area * ah +
          g_acx / 2 - g_aw;
  gb.x1 = -g_iw * share_of_max(b.x1, a.x1) - ecw * share_of_max(-b.x1, -a.x1) - g_area * bh -
          g_acx / 2 - g_bw;
  ga.y2 = g_ih * share_of_max(-a.y2, -b.y2) + ech * share_of_max(a.y2, b.y2) + g_area * aw +
          g_acy / 2 + g_ah;
  gb.y2 = g_ih * share_of_max(-b.y2, -a.y2) + ech * share_of_max(b.y2, a.y2) + g_area * bw -
          g_acy / 2 + g_bh;
  ga.y1 = -g_ih * share_of_max(a.y1, b.y1) - ech * share_of_max(-a.y1, -b.y1) - g_area * aw +
          g_acy / 2 - g_ah;
  gb.y1 = -g_ih * share_of_max(b.y1, a.y1) - ech * share_of_max(-b.y1, -a.y1) - g_area * bw -
          g_acy / 2 - g_bh;
}

// Corner gradients back to the 4 input values of `fmt`.
template <typename T>
C10_HOST_DEVICE C10_ALWAYS_INLINE void corners_grad_to_input(const Corners<T>& g, BoxFormat fmt,
                                                             T* out) {
  if (fmt == BoxFormat::kXyxy) {
    out[0] = g.x1, out[1] = g.y1, out[2] = g.x2, out[3] = g.y2;
  } else if (fmt == BoxFormat::kXywh) {  // x2 = x + w
    out[0] = g.x1 + g.x2, out[1] = g.y1 + g.y2, out[2] = g.x2, out[3] = g.y2;
  } else {  // x1,2 = cx ∓ w/2
    out[0] = g.x1 + g.x2, out[1] = g.y1 + g.y2, out[2] = (g.x2 - g.x1) / 2,
    out[3] = (g.y2 - g.y1) / 2;
  }
}

// One element-wise pair: the value, and the gradient (times g) of both input boxes.
template <IouKind kind, typename T>
C10_HOST_DEVICE C10_ALWAYS_INLINE T aligned_value(const T* a, const T* b, BoxFormat fmt,
                                                  const Eps<T>& e) {
  return pair_value<kind>(box_of(a, fmt), box_of(b, fmt), e);
}

template <IouKind kind, typename T>
C10_HOST_DEVICE C10_ALWAYS_INLINE void aligned_grad(const T* a, const T* b, BoxFormat fmt,
                                                    const Eps<T>& e, T g, T* grad_a, T* grad_b) {
  Corners<T> ga, gb;
  pair_grad<kind>(box_of(a, fmt), box_of(b, fmt), e, g, ga, gb);
  corners_grad_to_input(ga, fmt, grad_a);
  corners_grad_to_input(gb, fmt, grad_b);
}

// Calls f(std::integral_constant<IouKind, kind>{}), so kernels are compiled once per kind.
template <typename F>
void dispatch_kind(IouKind kind, const F& f) {
  switch (kind) {
    case IouKind::kIou: return f(std::integral_constant<IouKind, IouKind::kIou>{});
    case IouKind::kGiou: return f(std::integral_constant<IouKind, IouKind::kGiou>{});
    case IouKind::kDiou: return f(std::integral_constant<IouKind, IouKind::kDiou>{});
    case IouKind::kCiou: return f(std::integral_constant<IouKind, IouKind::kCiou>{});
  }
}

}  // namespace cvops::boxes
