/* empty.c - the shared library is the static one linked whole (CMakeLists.txt). */
