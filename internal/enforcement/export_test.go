package enforcement

// Lua is every Lua function of the package, for tests that run them on
// Redis.
var Lua = lua
