# What the build needs from the system, checked before anything else so that a machine that lacks
# some of it fails in the first lines of the output (pip install ./python shows them) with the
# whole list and the command that installs it, instead of the first missing package alone ~100
# lines later. Included by the root CMakeLists.txt before the C language is enabled.
set(_ms_missing_what "")
set(_ms_missing_debs "")
macro(_ms_missing what deb)
  list(APPEND _ms_missing_what "${what}")
  list(APPEND _ms_missing_debs "${deb}")
endmacro()

include(CheckLanguage)
check_language(C)
if(NOT CMAKE_C_COMPILER)
  _ms_missing("a C compiler (cc)" gcc)
endif()
find_package(PkgConfig QUIET)
if(NOT PKG_CONFIG_FOUND)
  _ms_missing("pkg-config" pkg-config)
else()
  # module | Debian package
  set(_ms_modules jansson libjansson-dev openblas libopenblas-dev libmicrohttpd libmicrohttpd-dev)
  if(MS_TESTS)
    list(APPEND _ms_modules cmocka libcmocka-dev)
  endif()
  list(LENGTH _ms_modules _n)
  math(EXPR _last "${_n} - 1")
  foreach(_i RANGE 0 ${_last} 2)
    math(EXPR _j "${_i} + 1")
    list(GET _ms_modules ${_i} _mod)
    list(GET _ms_modules ${_j} _deb)
    pkg_check_modules(_MS_PROBE_${_mod} QUIET ${_mod})
    if(NOT _MS_PROBE_${_mod}_FOUND)
      _ms_missing("${_mod} (pkg-config module)" ${_deb})
    endif()
  endforeach()
endif()
if(MS_PYTHON)
  find_package(Python3 QUIET COMPONENTS Interpreter Development.Module)
  if(NOT Python3_Development.Module_FOUND)
    _ms_missing("Python.h for ${Python3_EXECUTABLE}" python3-dev)
  endif()
endif()

if(_ms_missing_what)
  list(JOIN _ms_missing_what "\n  - " _what)
  list(JOIN _ms_missing_debs " " _debs)
  message(FATAL_ERROR
    "modelshare: this machine lacks what the build needs:\n  - ${_what}\n"
    "Install them with `make deps` in the repository (scripts/install-deps.sh), or:\n"
    "  sudo apt-get install ${_debs}\n"
    "No compiler at all? Install the prebuilt wheel instead (make wheel on a build machine, "
    "then pip install modelshare-*.whl).")
endif()
