/* The tile argument of the kernel modules' bindings (pulse_contrast_python.cc,
 * carrier_power_python.cc): the kernels read raw pointers, so a tile must be a contiguous
 * 2-D float32 array, checked here before any is read.
 */
#ifndef INCLUDED_RFDETECT_FLOAT32_TILE_H
#define INCLUDED_RFDETECT_FLOAT32_TILE_H

#include <pybind11/numpy.h>

#include <stdexcept>

// tile's pixels (rows x cols), or std::invalid_argument (Python's ValueError) naming what is wrong
inline const float* float32_tile(const pybind11::array& tile, long& rows, long& cols)
{
    if (!pybind11::isinstance<pybind11::array_t<float>>(tile) || !(tile.flags() & pybind11::array::c_style) ||
        tile.ndim() != 2)
        throw std::invalid_argument("the tile must be a contiguous 2-D float32 array");
    rows = tile.shape(0);
    cols = tile.shape(1);
    return static_cast<const float*>(tile.data());
}

#endif
