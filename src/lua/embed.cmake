# Turns src/lua/*.lua into a C source holding each script as a string, so the scripts stay real
# Lua files (readable, checkable) and the binaries need no files at run time.  lib.lua holds
# helpers shared by every script and is prepended to each (Redis scripts cannot import).
cmake_minimum_required(VERSION 3.18) # script mode: take current policies (CMP0054)
# Inputs: -DLUA_DIR=... -DOUT=...
file(GLOB scripts ${LUA_DIR}/*.lua)
list(SORT scripts)
file(READ ${LUA_DIR}/lib.lua lib)
set(body "/* Generated from the scripts in src/lua/ by src/lua/embed.cmake: do not edit. */\n")
foreach(f ${scripts})
  get_filename_component(name ${f} NAME_WE)
  if(name STREQUAL "lib")
    continue()
  endif()
  file(READ ${f} text)
  set(text "${lib}${text}")
  string(REPLACE "\\" "\\\\" text "${text}")
  string(REPLACE "\"" "\\\"" text "${text}")
  string(REPLACE "\n" "\\n\"\n    \"" text "${text}")
  string(APPEND body "const char imgq__lua_${name}[] =\n    \"${text}\";\n\n")
endforeach()
file(WRITE ${OUT}.tmp "${body}")
execute_process(COMMAND ${CMAKE_COMMAND} -E copy_if_different ${OUT}.tmp ${OUT})
