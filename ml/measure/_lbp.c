/* The uniform local binary pattern histogram of one cell's pixels, as scikit-image's
 * `local_binary_pattern(image, P, R, "nri_uniform")` codes them (skimage/feature/_texture.pyx,
 * scikit-image 0.25 to 0.26), then counted over the cell's mask.
 *
 * Each neighbour's grey value is scikit-image's bilinear interpolation (skimage/_shared/
 * interpolation.pxd) at (row + row_offset, col + col_offset), with zeros beyond the image (its
 * constant mode), in the same order of double operations, so the codes are bit-identical; it is
 * compared with the centre as scikit-image does (texture - centre >= 0). The pattern (bit i set
 * when neighbour i is at least the centre) is turned into its code by the caller's table of all
 * 2^P patterns. Only the mask's pixels are coded: their histogram is all the product keeps.
 *
 * Called through ctypes, which releases Python's GIL for the call, so the measurement thread's
 * texture work runs beside the worker's other threads.
 *
 * Build: cc -O3 -ffp-contract=off -shared -fPIC -o _lbp.so _lbp.c  (the Makefile does this;
 * no fused multiply-adds, which would round differently from scikit-image's code).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#define MAX_POINTS 24

/* Returns 0; -1 when `points` or the shape is out of range or memory runs out. `padded` is the
 * (rows, cols) image with `reach` (at least the radius, rounded up) pixels of zeros on every side;
 * `mask` is (rows, cols); `histogram` (length `bins`) is added to.
 *
 * Neighbour by neighbour over a row at a time, so the compiler vectorises the interpolation. A
 * neighbour's interpolation pixels sit at the same shifts from every pixel (floor(r + offset) - r
 * is the same for every row r); its fractions r + offset - floor(r + offset) may differ in the
 * last bit from row to row, so they are taken per row and per column, as scikit-image gets them. */
int hpaweb_lbp_histogram(const uint8_t *padded, const uint8_t *mask, int64_t rows, int64_t cols, int64_t reach,
                         int points, const double *row_offsets, const double *col_offsets, const int64_t *table,
                         int64_t bins, int64_t *histogram) {
    if (points < 1 || points > MAX_POINTS || rows < 1 || cols < 1 || reach < 0) {
        return -1;
    }
    double *row_fraction = malloc(sizeof(double) * points * rows);
    double *col_fraction = malloc(sizeof(double) * points * cols);
    double *col_rest = malloc(sizeof(double) * points * cols); /* 1 - fraction */
    double *texture = malloc(sizeof(double) * cols);
    uint32_t *pattern = malloc(sizeof(uint32_t) * cols);
    int status = 0;
    if (!row_fraction || !col_fraction || !col_rest || !texture || !pattern) {
        status = -1;
        goto done;
    }
    int64_t stride = cols + 2 * reach;
    int64_t low_shift[MAX_POINTS], high_shift[MAX_POINTS], left_shift[MAX_POINTS], right_shift[MAX_POINTS];
    int on_pixel[MAX_POINTS];
    for (int i = 0; i < points; i++) {
        low_shift[i] = (int64_t)floor(row_offsets[i]);
        high_shift[i] = (int64_t)ceil(row_offsets[i]);
        left_shift[i] = (int64_t)floor(col_offsets[i]);
        right_shift[i] = (int64_t)ceil(col_offsets[i]);
        if (low_shift[i] < -reach || high_shift[i] > reach || left_shift[i] < -reach || right_shift[i] > reach) {
            status = -1;
            goto done;
        }
        on_pixel[i] = 1;
        for (int64_t r = 0; r < rows; r++) {
            double rr = (double)r + row_offsets[i];
            row_fraction[i * rows + r] = rr - floor(rr);
            on_pixel[i] &= row_fraction[i * rows + r] == 0;
        }
        for (int64_t c = 0; c < cols; c++) {
            double cc = (double)c + col_offsets[i];
            col_fraction[i * cols + c] = cc - floor(cc);
            col_rest[i * cols + c] = 1 - col_fraction[i * cols + c];
            on_pixel[i] &= col_fraction[i * cols + c] == 0;
        }
    }
    for (int64_t r = 0; r < rows; r++) {
        const uint8_t *centre = padded + (r + reach) * stride + reach;
        for (int64_t c = 0; c < cols; c++) {
            pattern[c] = 0;
        }
        for (int i = 0; i < points; i++) {
            const uint8_t *top_row = centre + low_shift[i] * stride, *bottom_row = centre + high_shift[i] * stride;
            const uint8_t *top_left = top_row + left_shift[i], *top_right = top_row + right_shift[i];
            const uint8_t *bottom_left = bottom_row + left_shift[i], *bottom_right = bottom_row + right_shift[i];
            if (on_pixel[i]) { /* (1 - 0) * v + 0 * w is v for finite grey values */
                for (int64_t c = 0; c < cols; c++) {
                    texture[c] = (double)top_left[c];
                }
            } else {
                double dr = row_fraction[i * rows + r], rest = 1 - dr;
                const double *dc = col_fraction + i * cols, *dc_rest = col_rest + i * cols;
                for (int64_t c = 0; c < cols; c++) {
                    double top = dc_rest[c] * (double)top_left[c] + dc[c] * (double)top_right[c];
                    double bottom = dc_rest[c] * (double)bottom_left[c] + dc[c] * (double)bottom_right[c];
                    texture[c] = rest * top + dr * bottom;
                }
            }
            uint32_t bit = (uint32_t)1 << i;
            for (int64_t c = 0; c < cols; c++) {
                pattern[c] |= texture[c] - (double)centre[c] >= 0 ? bit : 0;
            }
        }
        const uint8_t *inside = mask + r * cols;
        for (int64_t c = 0; c < cols; c++) {
            if (inside[c]) {
                int64_t code = table[pattern[c]];
                if (code >= 0 && code < bins) {
                    histogram[code]++;
                }
            }
        }
    }
done:
    free(row_fraction);
    free(col_fraction);
    free(col_rest);
    free(texture);
    free(pattern);
    return status;
}
