# Adversarial integration tests of the protocol API (post, timers, typed state, custom
# decoders): numbered traffic while connections move between shards and the server stops,
# inline and with workers. Included from tests/protocols/CMakeLists.txt.
foreach(t post state decoder)
  if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/adversarial_${t}_test.cpp)
    esockets_add_test(protocols_adversarial_${t}_test LABELS integration SOURCES adversarial_${t}_test.cpp)
  endif()
endforeach()
# Timers measure delays and cadence: alone on the machine.
if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/adversarial_timers_test.cpp)
  esockets_add_test(protocols_adversarial_timers_test SERIAL LABELS integration SOURCES adversarial_timers_test.cpp)
endif()
