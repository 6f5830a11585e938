// scene7-exporter as a monitoring mixin: the dashboards and rules of dashboards/ for jsonnet users.
//
// There is one source: dashboards/*.json and dashboards/scene7.rules.yml are read as they are
// (tests/test_mixin.py renders this file and compares it with them) and `_config` is applied to
// them by replacing the few strings it names. Use it as any mixin:
//
//   local scene7 = (import 'scene7-exporter/dashboards/mixin/mixin.libsonnet') + {
//     _config+:: { clusterLabel: 'k8s_cluster', grafanaUrl: 'https://grafana.example.com' },
//   };
//   { 'alerts.yaml': std.manifestYamlDoc(scene7.prometheusAlerts),
//     'rules.yaml': std.manifestYamlDoc(scene7.prometheusRules) }
//   + { [name]: std.manifestJsonEx(scene7.grafanaDashboards[name], '  ')
//       for name in std.objectFields(scene7.grafanaDashboards) }
{
  _config+:: {
    // How Scene7ExporterDown finds the exporter's scrape job (its `up` series).
    selector: 'job="scene7-exporter"',
    // The label that tells clusters apart; kept in every `by` and `on` of the rules and
    // filtered on by the dashboards' hidden variable.
    clusterLabel: 'cluster',
    // Where the alerts' dashboard_url annotations point, and their runbook_url (an anchor is
    // appended: the alert's name in lower case).
    grafanaUrl: 'http://localhost:3000',
    runbookUrl: 'https://github.com/scene7-exporter/scene7-exporter/blob/main/README.md#',
    // Thresholds.
    stuckTaskMinutes: 30,  // Scene7TaskStuck, the dashboards' "stuck"
    jobRunningTooLongHours: 6,  // Scene7JobRunningTooLong
    pendingBacklogItems: 1000,  // Scene7PendingBacklogGrowing
    filesInErrorPerJob: 10,  // Scene7JobFinishedWithErrors
  },

  local config = self._config,
  local defaults = {
    selector: 'job="scene7-exporter"',
    clusterLabel: 'cluster',
    grafanaUrl: 'http://localhost:3000',
    runbookUrl: 'https://github.com/scene7-exporter/scene7-exporter/blob/main/README.md#',
  },

  // Applies [from, to] replacements to every string of `value` (keys excepted), and replaces
  // the numbers that are fields of `numbers`.
  local replaceAll(value, replacements, numbers={}) =
    if std.isString(value) then
      std.foldl(function(text, pair) std.strReplace(text, pair[0], pair[1]), replacements, value)
    else if std.isNumber(value) then
      std.get(numbers, std.toString(value), value)
    else if std.isArray(value) then
      [replaceAll(item, replacements, numbers) for item in value]
    else if std.isObject(value) then
      { [key]: replaceAll(value[key], replacements, numbers) for key in std.objectFields(value) }
    else value,

  local clusterReplacements = [
    ['(cluster, ', '(%s, ' % config.clusterLabel],
    ['$labels.cluster', '$labels.' + config.clusterLabel],
    ['{cluster=%q, ', '{%s=%%q, ' % config.clusterLabel],
    ['cluster=~"$cluster"', '%s=~"$cluster"' % config.clusterLabel],
    ['label_values(scene7_up, cluster)', 'label_values(scene7_up, %s)' % config.clusterLabel],
  ],
  local stuckSeconds = '%d' % (config.stuckTaskMinutes * 60),

  // Per alert: the strings of its expression and annotations that hold a threshold.
  local thresholds = {
    Scene7TaskStuck: [
      ['_timestamp_seconds > 1800', '_timestamp_seconds > ' + stuckSeconds],
      ['(threshold 30m)', '(threshold %dm)' % config.stuckTaskMinutes],
    ],
    Scene7JobRunningTooLong: [
      ['> 6 * 3600', '> %d * 3600' % config.jobRunningTooLongHours],
      ['more than 6 hours', 'more than %d hours' % config.jobRunningTooLongHours],
      ['(threshold 6h)', '(threshold %dh)' % config.jobRunningTooLongHours],
    ],
    Scene7PendingBacklogGrowing: [
      [':sum > 1000', ':sum > %d' % config.pendingBacklogItems],
      ['(threshold 1000 items)', '(threshold %d items)' % config.pendingBacklogItems],
    ],
    Scene7JobFinishedWithErrors: [
      ['{result="error"}) >= 10)', '{result="error"}) >= %d)' % config.filesInErrorPerJob],
      ['(threshold 10)', '(threshold %d)' % config.filesInErrorPerJob],
    ],
  },

  local configured(rule) =
    local name = if std.objectHas(rule, 'alert') then rule.alert else rule.record;
    replaceAll(rule, clusterReplacements + std.get(thresholds, name, []) + [
      [defaults.selector, config.selector],
      [defaults.grafanaUrl + '/d/', config.grafanaUrl + '/d/'],
      [defaults.runbookUrl, config.runbookUrl],
    ]),

  local rulesFile = std.parseYaml(importstr '../scene7.rules.yml'),
  local groupsOf(kind, suffix) = [
    { name: group.name + suffix, rules: [configured(rule) for rule in group.rules if std.objectHas(rule, kind)] }
    for group in rulesFile.groups
    if std.length([rule for rule in group.rules if std.objectHas(rule, kind)]) > 0
  ],

  prometheusAlerts+:: { groups+: groupsOf('alert', '') },
  prometheusRules+:: { groups+: groupsOf('record', '.rules') },

  // The stuck and long-job thresholds: in queries, in the colours of "since last progress"
  // (1800 s) and of job ages (21600 s), in words.
  local dashboardReplacements = clusterReplacements + [
    [' > 1800', ' > ' + stuckSeconds],
    ['for 30 minutes', 'for %d minutes' % config.stuckTaskMinutes],
    ['past 30 minutes', 'past %d minutes' % config.stuckTaskMinutes],
    ['after 6 hours', 'after %d hours' % config.jobRunningTooLongHours],
  ],
  local dashboardNumbers = {
    '1800': config.stuckTaskMinutes * 60,
    '21600': config.jobRunningTooLongHours * 3600,
  },
  local dashboard(file) = replaceAll(file, dashboardReplacements, dashboardNumbers),
  grafanaDashboards+:: {
    'scene7-overview.json': dashboard(import '../scene7-overview.json'),
    'scene7-job.json': dashboard(import '../scene7-job.json'),
  },
}
