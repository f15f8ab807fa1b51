# cpack.cmake - the Debian package of throttle, built with CPack from a tree configured for the
# prefix /usr (included by the top-level CMakeLists.txt):
#   cmake -S . -B build-deb -DCMAKE_INSTALL_PREFIX=/usr -DTHR_TESTS=OFF -DTHR_BENCH=OFF
#   cmake --build build-deb -j2 && (cd build-deb && cpack -G DEB)
# One package, throttle, holding what `cmake --install` installs: the library (shared and
# static), the header, the pkg-config and CMake files, throttled in /usr/sbin, shmctl in
# /usr/bin, /etc/throttle/throttled.conf (a conffile: dpkg keeps the admin's edits), the systemd
# unit in /usr/lib/systemd/system and the man pages. Its dependencies come from dpkg-shlibdeps
# (dpkg-dev): among them libmicrohttpd12 (/metrics and the HTTP API) and libjansson4 (the HTTP
# API's JSON), which throttled links. The maintainer scripts only tell a running systemd about the unit (daemon-reload),
# restart a running throttled on upgrade and stop it on removal; enabling it is the admin's
# choice (systemctl enable --now throttled).
set(THR_PACKAGE_MAINTAINER "throttle maintainers <throttle@localhost>" CACHE STRING
  "the Maintainer field of the Debian package")

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME throttle)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "${THR_PACKAGE_MAINTAINER}")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
  "host-wide rate limits decided by compare-and-swap in shared memory")
set(CPACK_PACKAGE_DESCRIPTION
  "throttled builds a shared-memory arena of named rate limiters (on hugepages where the host
has them); processes linked with libthrottle-client decide each admission with an atomic
compare-and-swap, without a syscall or a lock. shmctl inspects the arena.")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_SET_DESTDIR ON) # /etc/throttle is an absolute destination: stage it under DESTDIR
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS ON) # the shlibs file, for packages linking it
set(CPACK_STRIP_FILES ON) # programs and the shared library (an archive is never stripped)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
  ${PROJECT_SOURCE_DIR}/packaging/debian/conffiles ${PROJECT_SOURCE_DIR}/packaging/debian/postinst
  ${PROJECT_SOURCE_DIR}/packaging/debian/prerm ${PROJECT_SOURCE_DIR}/packaging/debian/postrm
  ${PROJECT_SOURCE_DIR}/packaging/debian/triggers) # triggers: ldconfig after install/removal
# A package of a tree configured for another prefix would name paths it does not install
# (the daemon's default config, the unit's ExecStart): refuse it at cpack time.
set(THR_CPACK_PREFIX "${CMAKE_INSTALL_PREFIX}")
configure_file(${PROJECT_SOURCE_DIR}/packaging/cpack_project.cmake.in
  ${PROJECT_BINARY_DIR}/cpack_project.cmake @ONLY)
set(CPACK_PROJECT_CONFIG_FILE ${PROJECT_BINARY_DIR}/cpack_project.cmake)
include(CPack)
