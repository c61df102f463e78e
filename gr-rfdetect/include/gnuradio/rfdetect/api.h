/* gr-rfdetect: symbol visibility of libgnuradio-rfdetect (gr_modtool's api.h). */
#ifndef INCLUDED_RFDETECT_API_H
#define INCLUDED_RFDETECT_API_H

#include <gnuradio/attributes.h>

#ifdef gnuradio_rfdetect_EXPORTS
#define RFDETECT_API __GR_ATTR_EXPORT
#else
#define RFDETECT_API __GR_ATTR_IMPORT
#endif

#endif /* INCLUDED_RFDETECT_API_H */
