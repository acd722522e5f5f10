# install.cmake - the install step for what is not a build target: the
# systemd unit, the sample configuration and the man page. Runs at install
# time (`cmake --install BUILD [--prefix P]`, or `make install PREFIX=P
# DESTDIR=D`), so the paths in the unit follow the prefix given then, not
# the one configured: /usr puts the configuration in /etc (as GNUInstallDirs
# does), any other prefix in PREFIX/etc.
#
# Expects SRC (the source tree) and KB_BUILD_DIR (the build tree). Writes through file(INSTALL), which honours
# DESTDIR and records each file in install_manifest.txt.

set(prefix "${CMAKE_INSTALL_PREFIX}")
if(prefix STREQUAL "/usr")
  set(sysconfdir "/etc")
else()
  set(sysconfdir "${prefix}/etc")
endif()
set(bindir "${prefix}/bin")

# the unit, its paths filled in for this prefix
set(BINDIR "${bindir}")
set(SYSCONFDIR "${sysconfdir}")
set(stage "${KB_BUILD_DIR}/install-stage")
file(MAKE_DIRECTORY "${stage}")
configure_file("${SRC}/packaging/keybrake.service.in" "${stage}/keybrake.service" @ONLY)
file(INSTALL "${stage}/keybrake.service" DESTINATION "${prefix}/lib/systemd/system"
     FILE_PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)

file(INSTALL "${SRC}/packaging/keybrake.1" DESTINATION "${prefix}/share/man/man1"
     FILE_PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)

# the sample, always, as documentation
file(INSTALL "${SRC}/packaging/keybrake.ini" DESTINATION "${prefix}/share/doc/keybrake"
     FILE_PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
file(INSTALL "${SRC}/README.md" "${SRC}/docs/operations.md" DESTINATION "${prefix}/share/doc/keybrake"
     FILE_PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)

# the configuration itself only where there is none yet: an operator's
# edited file is never overwritten by a reinstall
if(EXISTS "$ENV{DESTDIR}${sysconfdir}/keybrake/keybrake.ini")
  message(STATUS "Keeping: $ENV{DESTDIR}${sysconfdir}/keybrake/keybrake.ini")
else()
  file(INSTALL "${SRC}/packaging/keybrake.ini" DESTINATION "${sysconfdir}/keybrake"
       FILE_PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
endif()
