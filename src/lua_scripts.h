/* lua_scripts.h - the queue's Lua scripts, compiled in from src/lua/ (private to libimgq). */
#ifndef IMGQ_LUA_SCRIPTS_H
#define IMGQ_LUA_SCRIPTS_H

extern const char imgq__lua_submit[];
extern const char imgq__lua_claim[];
extern const char imgq__lua_complete[];
extern const char imgq__lua_fail[];
extern const char imgq__lua_extend[];
extern const char imgq__lua_reap[];
extern const char imgq__lua_release[];
extern const char imgq__lua_dlq[];
extern const char imgq__lua_cancel[];
extern const char imgq__lua_pause[];
extern const char imgq__lua_stats[];
extern const char imgq__lua_rate[];
extern const char imgq__lua_poll[];
extern const char imgq__lua_breaker[];
extern const char imgq__lua_budget[];
extern const char imgq__lua_pipeline[];
extern const char imgq__lua_coalesce[];
extern const char imgq__lua_webhook[];

/* The events' field types, from src/lua/event_fields.def: (event, field, type) triples, then
 * NULL; event "*" is every event, type is "string", "int" or "json". */
extern const char *const imgq__event_fields[];

#endif
