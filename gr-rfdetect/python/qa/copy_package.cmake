# cmake -DSRC=python/rfdetect -DDST=build/test_modules/gnuradio/rfdetect -P copy_package.cmake
file(GLOB_RECURSE files RELATIVE "${SRC}" "${SRC}/*.py" "${SRC}/models/*")
foreach(f ${files})
  if(NOT f MATCHES "__pycache__")
    get_filename_component(d "${DST}/${f}" DIRECTORY)
    file(COPY "${SRC}/${f}" DESTINATION "${d}")
  endif()
endforeach()
