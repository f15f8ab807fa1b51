# static_api.cmake - make the static libthrottle-client.a export only the API, as the shared
# library does through its version script. Run after the archive is built (cmake -P):
#   the archive's members are linked into one relocatable object (ld -r), in which every call
#   between them is already resolved to a symbol of that object; objcopy then makes every
#   defined global symbol local except the API, and the archive is rewritten with that one
#   object. A program linking the archive sees the API only: it may define its own shm_* or
#   thr_* functions, and the library never calls them.
# The API list is read from the version script (libthrottle-client.map, its global: names), so
# the two libraries cannot drift; a listed name the archive does not define is an error.
#
#   cmake -DARCHIVE=... -DMAP=... -DLD=... -DOBJCOPY=... -DAR=... -DNM=... -P static_api.cmake
cmake_minimum_required(VERSION 3.18) # if(IN_LIST)
foreach(v ARCHIVE MAP LD OBJCOPY AR NM)
  if(NOT ${v})
    message(FATAL_ERROR "static_api.cmake: ${v} is not set")
  endif()
endforeach()

# run(...) - execute_process that stops on failure (cmake 3.18 has no COMMAND_ERROR_IS_FATAL).
function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "static_api.cmake: ${ARGN} failed (${rc}):\n${out}${err}")
  endif()
  set(run_out "${out}" PARENT_SCOPE)
endfunction()

# The API: the names under "global:" in each block of the version script, up to "local:" or the
# block's end.
file(READ "${MAP}" map)
string(REGEX REPLACE "/\\*[^*]*\\*/" "" map "${map}")
string(REPLACE ";" "," map "${map}") # a ';' would split CMake lists
string(REGEX MATCHALL "global:[^}]*}" blocks "${map}")
set(api)
foreach(block ${blocks})
  string(REGEX REPLACE "local:.*" "" block "${block}")
  string(REGEX MATCHALL "[A-Za-z_][A-Za-z0-9_]*[ \t]*," names "${block}")
  foreach(n ${names})
    string(REGEX REPLACE "[ \t]*,$" "" n "${n}")
    list(APPEND api "${n}")
  endforeach()
endforeach()
list(LENGTH api n_api)
if(n_api EQUAL 0)
  message(FATAL_ERROR "static_api.cmake: no global: names in ${MAP}")
endif()

get_filename_component(dir "${ARCHIVE}" DIRECTORY)
get_filename_component(base "${ARCHIVE}" NAME)
set(obj "${dir}/throttle-client.o") # the one member of the rewritten archive
set(list "${dir}/${base}.api.txt")
set(tmp "${dir}/${base}.api.tmp")
string(REPLACE ";" "\n" api_lines "${api}")
file(WRITE "${list}" "${api_lines}\n")

file(REMOVE "${obj}" "${tmp}")
run(${LD} -r -o "${obj}" --whole-archive "${ARCHIVE}")
run(${OBJCOPY} "--keep-global-symbols=${list}" "${obj}")

# Every API name must be defined, and nothing else global.
run(${NM} -g --defined-only "${obj}")
string(REGEX MATCHALL "[^\n]+" lines "${run_out}")
set(left)
foreach(l ${lines})
  string(REGEX REPLACE "^.* " "" sym "${l}")
  list(APPEND left "${sym}")
endforeach()
foreach(n ${api})
  if(NOT n IN_LIST left)
    message(FATAL_ERROR "static_api.cmake: ${n} is in ${MAP} but not defined in ${ARCHIVE}")
  endif()
endforeach()
foreach(s ${left})
  if(NOT s IN_LIST api)
    message(FATAL_ERROR "static_api.cmake: ${s} stayed global in ${ARCHIVE}")
  endif()
endforeach()

run(${AR} qc "${tmp}" "${obj}")
run(${AR} s "${tmp}")
file(RENAME "${tmp}" "${ARCHIVE}")
file(REMOVE "${obj}")
