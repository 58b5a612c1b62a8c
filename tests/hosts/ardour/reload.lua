-- JAMNet in Ardour 7, part 2 (run by ardour7-lua in a NEW process after
-- session.lua; see tests/ci.d/62-ardour.sh). Loads the saved session, lets
-- the engine run a few cycles, and prints every JAMNet plugin's parameters
-- (plain values) for the checker (check.py):
--   JAMNET GOT <track>|<param label>|<value>
--   JAMNET PLUGIN <track>|<plugin name>|<type>
--   JAMNET TEMPO <bpm at 0>
local dir = assert(os.getenv("JAMNET_ARDOUR_SESSION_DIR"), "JAMNET_ARDOUR_SESSION_DIR unset")
local name = assert(os.getenv("JAMNET_ARDOUR_SESSION_NAME"), "JAMNET_ARDOUR_SESSION_NAME unset")

assert(AudioEngine:set_backend("None (Dummy)", "", ""), "cannot select the Dummy backend")
AudioEngine:set_sample_rate(48000)
AudioEngine:set_buffer_size(512)
assert(AudioEngine:start(false) == 0, "AudioEngine:start failed")

local s = load_session(dir, name)
assert(s, "load_session failed: " .. dir .. " " .. name)
ARDOUR.LuaAPI.wait_for_process_callback(8, 4000)

local tm = Temporal.TempoMap.read()
print(string.format("JAMNET TEMPO %.6f", tm:tempo_at(Temporal.timepos_t(0)):quarter_notes_per_minute()))

for _, track in ipairs({ "Send", "Receive", "Transport" }) do
  local r = s:route_by_name(track)
  assert(not r:isnil(), "track '" .. track .. "' missing after reload")
  local proc = r:nth_plugin(0)
  assert(not proc:isnil(), "track '" .. track .. "' has no plugin after reload")
  local pi = proc:to_insert()
  local plugin = pi:plugin(0)
  print(string.format("JAMNET PLUGIN %s|%s|%s", track, plugin:name(), plugin:get_info().type == ARDOUR.PluginType.VST3 and "VST3" or "other"))
  for i = 0, plugin:parameter_count() - 1 do
    local label = plugin:parameter_label(i)
    -- nice-plug's 16 x 130 hidden "MIDI Ch. N CC M" VST3 parameters are
    -- not JAMNet settings.
    if plugin:parameter_is_input(i) and not string.find(label, "^MIDI Ch%. ") then
      local v = ARDOUR.LuaAPI.get_plugin_insert_param(pi, i, false)
      print(string.format("JAMNET GOT %s|%s|%.9g", track, label, v))
    end
  end
end
close_session()
