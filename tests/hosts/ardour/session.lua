-- JAMNet in Ardour 7, part 1 (run by ardour7-lua; see tests/ci.d/62-ardour.sh).
-- Creates a 48 kHz session on the Dummy backend, sets 133 BPM, adds three
-- tracks with JAMNet Send / Receive / Transport (VST3), sets non-default
-- parameter values, freewheel-exports JAMNET_EXPORT_SAMPLES samples, saves.
-- Prints machine-readable lines for the checker (check.py):
--   JAMNET SET <track>|<param label>|<default>|<value set>|<value read back>
--   JAMNET EXPORT <ok 0/1>|<start>|<end>|<folder>
--   JAMNET BLOCK <buffer size>
-- Any failure raises a Lua error (ardour7-lua then exits non-zero / prints Error).
-- JAMNET_ARDOUR_NO_PLUGINS=1 builds the same session without the plugins:
-- it reproduces Ardour 7.3's intermittent heap corruption around
-- SimpleExport on its own (see docs/plugins.md, "Ardour 7").
local dir = assert(os.getenv("JAMNET_ARDOUR_SESSION_DIR"), "JAMNET_ARDOUR_SESSION_DIR unset")
local name = assert(os.getenv("JAMNET_ARDOUR_SESSION_NAME"), "JAMNET_ARDOUR_SESSION_NAME unset")
local export_dir = assert(os.getenv("JAMNET_ARDOUR_EXPORT_DIR"), "JAMNET_ARDOUR_EXPORT_DIR unset")
local export_samples = tonumber(os.getenv("JAMNET_EXPORT_SAMPLES") or "192000")
local RATE, BPM = 48000, 133

-- Track name -> plugin name and the parameter values to set (by parameter
-- label, plain values as Ardour shows them). Each differs from the plugin's
-- default except Transport "Mode" = Lead (0), which this test needs to see
-- frames at all (and which is then saved and restored like the others).
local PLAN = {
  { track = "Send", plugin = "JAMNet Send", params = {
      ["Send"] = 0,            -- off: no audio on the wire during the test
      ["Format"] = 2,          -- 32-bit float (default 24-bit)
      ["MIDI burst"] = 5,      -- default 3
      ["JELLIE (mono)"] = 1,   -- default off
  } },
  { track = "Receive", plugin = "JAMNet Receive", params = {
      ["Jitter mode"] = 1,     -- Manual (default Auto)
      ["Jitter buffer"] = 42,  -- ms, default 10
      ["Concealment"] = 3,     -- Burg (default Auto)
      ["Output gain"] = 0.5,   -- linear (-6 dB), default 1.0
      ["MIDI out"] = 0,        -- default on
  } },
  { track = "Transport", plugin = "JAMNet Transport", params = {
      ["Mode"] = 0,            -- Lead (the default, needed to publish)
      ["Announce every"] = 100,-- ms, default 250
      ["MIDI Clock out"] = 0,  -- default on
      ["MTC out"] = 1,         -- default off
      ["MTC rate"] = 3,        -- 30 fps (default 25)
  } },
}

assert(AudioEngine:set_backend("None (Dummy)", "", ""), "cannot select the Dummy backend")
AudioEngine:set_sample_rate(RATE)
AudioEngine:set_buffer_size(512)
-- The Dummy backend's capture ports generate a sine: the Send track
-- monitors its input, so the export carries audio through JAMNet Send.
assert(AudioEngine:set_device_name("Sine Wave") == 0, "Dummy backend has no 'Sine Wave' device")
assert(AudioEngine:start(false) == 0, "AudioEngine:start failed")

local s = create_session(dir, name, RATE)
assert(s, "create_session failed for " .. dir)
print("JAMNET BLOCK " .. s:get_block_size())

local tm = Temporal.TempoMap.fetch_writable()
tm:set_tempo(Temporal.Tempo(BPM, BPM, 4), Temporal.timepos_t(0))
Temporal.TempoMap.update(tm)

-- Index of the parameter with this label (nth_parameter numbering, as
-- LuaAPI.set/get_plugin_insert_param take it).
local function param_index(plugin, label)
  for i = 0, plugin:parameter_count() - 1 do
    if plugin:parameter_label(i) == label then return i end
  end
  error("parameter '" .. label .. "' not found on " .. plugin:name())
end

if os.getenv("JAMNET_ARDOUR_NO_PLUGINS") == "1" then PLAN = {} end

for _, t in ipairs(PLAN) do
  local tl = s:new_audio_track(2, 2, nil, 1, t.track, ARDOUR.PresentationInfo.max_order, ARDOUR.TrackMode.Normal, true)
  assert(tl:size() == 1, "new_audio_track failed: " .. t.track)
  local route = tl:front()
  if t.track == "Send" then
    route:monitoring_control():set_value(ARDOUR.MonitorChoice.MonitorInput, PBD.GroupControlDisposition.NoGroup)
  end
  local p = ARDOUR.LuaAPI.new_plugin(s, t.plugin, ARDOUR.PluginType.VST3, "")
  assert(not p:isnil(), "Ardour does not know VST3 '" .. t.plugin .. "' (scan failed?)")
  assert(route:add_processor_by_index(p, 0, nil, true) == 0, "add_processor failed: " .. t.plugin)
  local pi = p:to_insert()
  local plugin = pi:plugin(0)
  for label, value in pairs(t.params) do
    local i = param_index(plugin, label)
    local pd = ARDOUR.ParameterDescriptor()
    local _, d = plugin:get_parameter_descriptor(i, pd)
    local default = d[2].normal
    assert(ARDOUR.LuaAPI.set_plugin_insert_param(pi, i, value), "set_plugin_insert_param failed: " .. label)
    t[label] = { i = i, default = default }
  end
end
-- Let the plugins see the new values in a process cycle before anything
-- reads or saves their state (else the saved state is one cycle stale).
ARDOUR.LuaAPI.wait_for_process_callback(4, 2000)
for _, t in ipairs(PLAN) do
  local pi = s:route_by_name(t.track):nth_plugin(0):to_insert()
  for label, value in pairs(t.params) do
    local got = ARDOUR.LuaAPI.get_plugin_insert_param(pi, t[label].i, false)
    print(string.format("JAMNET SET %s|%s|%.9g|%.9g|%.9g", t.track, label, t[label].default, value, got))
  end
end

-- Freewheel export of the range [0, export_samples). The SimpleExport
-- object must be destroyed while the session is alive: left to Lua's final
-- garbage collection after close_session(), its PortExportChannel
-- destructor frees freed memory and luasession aborts ("double free or
-- corruption", seen in ~2 of 10 runs under gdb).
do
  local e = s:simple_export()
  e:set_folder(export_dir)
  e:set_name("jamnet-export")
  e:set_range(0, export_samples)
  -- tests/hosts/ardour/export/jamnet-f32.preset (copied into the scratch
  -- XDG_CONFIG_HOME/ardour7/export by 62-ardour.sh): float WAV, no analysis.
  assert(e:set_preset("0e5d1b7a-8c44-4f0e-b6a2-3d9f7c21a5e8"), "export preset 'JAMNet test f32 WAV' not found in XDG_CONFIG_HOME/ardour7/export")
  assert(e:check_outputs(), "simple_export: no outputs to export")
  local ok = e:run_export()
  print(string.format("JAMNET EXPORT %d|%d|%d|%s", ok and 1 or 0, 0, export_samples, export_dir))
  assert(ok, "run_export failed")
  e = nil
end
collectgarbage()
collectgarbage()

print(string.format("JAMNET AFTER rolling=%s sample=%d", tostring(s:transport_rolling()), s:transport_sample()))
-- Keep the engine running (stopped) ~0.5 s so the Transport plugin
-- publishes the STOP that follows the export.
ARDOUR.LuaAPI.wait_for_process_callback(48, 4000)
assert(s:save_state("", false, false, false, false, false) == 0, "save_state failed")
print("JAMNET SAVED " .. dir)
close_session()
