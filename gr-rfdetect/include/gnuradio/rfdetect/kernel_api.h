/* gr-rfdetect: symbol visibility of the kernels (stft_rows.h, pulse_contrast.h, carrier_power.h), which build
 * without GNU Radio: api.h needs GNU Radio's headers, these must not. */
#ifndef INCLUDED_RFDETECT_KERNEL_API_H
#define INCLUDED_RFDETECT_KERNEL_API_H

#if defined(_WIN32)
#define RFDETECT_KERNEL_API
#else
#define RFDETECT_KERNEL_API __attribute__((visibility("default")))
#endif

#endif /* INCLUDED_RFDETECT_KERNEL_API_H */
